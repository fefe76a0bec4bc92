"""The web console (``sunlit-ground serve``): fan-out logic, HTTP API, and the page in a real browser.

Browser tests run Debian's Chromium headless through Playwright against a real agent process
on a real link. Without Chromium they fail (run scripts/ensure_test_tools.sh); they never skip.
Every wait is on a DOM condition with a timeout; nothing sleeps and then asserts.
"""

from __future__ import annotations

import asyncio
import doctest
import json
import math
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ground.web import hub, server
from ground.web.browser import ChromiumMissing, launch, require_chromium
from ground.web.hub import ClientQueue, LagTracker, Sample, json_safe
from ground.web.server import WebConsole

PAGE_TIMEOUT_MS = 20_000  # the agent starts (and publishes) within a few seconds; generous for a loaded CI machine
COMMAND_TIMEOUT_MS = 15_000


# --- pure parts ------------------------------------------------------------------------------


def test_doctests():
    for module in (hub, server):
        result = doctest.testmod(module)
        assert result.failed == 0, f"{module.__name__}: {result.failed} doctest(s) failed"


def _sample(points: int, recv_ms: float = 0.0) -> Sample:
    return Sample(1, 0.0, tuple(range(points)), recv_ms)


def test_queue_drops_oldest_and_counts_points():
    wakes = []
    q = ClientQueue(lambda: wakes.append(1), max_points=25)
    for i in range(10):
        q.put_sample(Sample(1, float(i), tuple(range(10)), 0.0))
    assert len(wakes) == 1, "one wake-up per batch, not per packet"
    batch = q.take()
    assert [s.time_s for s in batch.samples] == [8.0, 9.0], "the newest samples are kept"
    assert batch.dropped_points == 80 and q.dropped_points_total == 80
    q.put_sample(_sample(5))
    assert len(wakes) == 2, "take() re-arms the wake-up"
    assert q.take().dropped_points == 0, "drops are reported once"
    assert q.dropped_points_total == 80


def test_queue_keeps_a_sample_larger_than_its_bound():
    q = ClientQueue(max_points=3)
    q.put_sample(_sample(10))
    assert len(q.take().samples) == 1


def test_control_messages_have_their_own_bound():
    q = ClientQueue(max_points=1, max_control=3)
    for i in range(5):
        q.put_control({"i": i})
    q.put_sample(_sample(50))
    batch = q.take()
    assert [m["i"] for m in batch.control] == [2, 3, 4]
    assert batch.dropped_control == 2 and len(batch.samples) == 1


def test_lag_from_the_echo_round_trip():
    # Server sends at 1000 ms a batch of packets received at 960 and 990 ms. Transit is 1 ms each
    # way; the page draws 12 ms after receipt and echoes 3 ms after that: the echo is back at
    # 1000 + 1 + 15 + 1 = 1017 ms. Drawn at 1013 ms on the server's clock.
    lag = LagTracker()
    lag.sent(("page", 1), 1000.0, [_sample(4, 960.0), _sample(6, 990.0)])
    out = lag.drawn(("page", 1), page_recv_ms=50.0, page_draw_ms=62.0, page_echo_ms=65.0, echo_at_ms=1017.0)
    assert [round(s.lag_ms, 6) for s in out] == [53.0, 23.0]
    assert [s.points for s in out] == [4, 6]
    assert all(s.error_ms == pytest.approx(1.0) for s in out), "half the 2 ms round-trip transit"
    assert lag.drawn(("page", 1), 50.0, 62.0, 65.0, 1017.0) == [], "an echo counts once"


def test_json_safe_turns_non_finite_numbers_into_text():
    body = json_safe({"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": b"\x01\xff", "d": None})
    assert json.loads(json.dumps(body, allow_nan=False)) == {"a": "NaN", "b": ["inf", "-inf", 1.5], "c": "01ff", "d": None}


# --- helpers ---------------------------------------------------------------------------------


def _http(url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def console(ipc_url, start_agent):
    """A real agent and a web console on its link."""
    start_agent(ipc_url)
    web = WebConsole(ipc_url).start()
    yield web
    web.stop()


@pytest.fixture(scope="module")
def browser():
    missing = ""
    try:
        require_chromium()
        from playwright.sync_api import sync_playwright
    except ChromiumMissing as exc:
        missing = str(exc)
    except ImportError:
        missing = ("the Python package playwright is missing: pip install -e '.[test]' (or pip install playwright); "
                   "never `playwright install`")
    if missing:  # fail, never skip: a console nobody tested in a browser is not tested
        pytest.fail(missing, pytrace=False)
    pw = sync_playwright().start()
    try:
        chromium = launch(pw)
    except Exception:
        pw.stop()
        raise
    yield chromium
    chromium.close()
    pw.stop()


@pytest.fixture
def page(browser, tmp_path):
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))

    def console_message(msg) -> None:
        # The archive's 501 is an answer the page shows, not a fault; Chromium logs it anyway.
        if msg.type == "error" and "status of 501" not in msg.text:
            errors.append(f"console {msg.type}: {msg.text}")

    page.on("console", console_message)
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    yield page
    page.close()
    assert not errors, "the page reported errors:\n" + "\n".join(errors)


def _open(page, console) -> None:
    page.goto(console.url)
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector("#tm-uptime_s[data-state=nominal]")


def _screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert len(data) > 20_000, f"{path} is only {len(data)} bytes: a blank page?"
    return path


def _send_from_form(page, name: str, args: dict | None = None, confirm: bool = False):
    """Fill the generated form and send; return the command's row in the history."""
    page.select_option("#cmd-select", name)
    for key, value in (args or {}).items():
        field = page.locator(f"#arg-{key}")
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(str(value))
        else:
            field.fill(str(value))
    if confirm:
        page.check("#cmd-confirm")
    before = page.get_attribute("#cmd-form", "data-last-id")
    page.click("#cmd-send")
    page.wait_for_function("b => (document.getElementById('cmd-form').dataset.lastId || null) !== b", arg=before)
    return page.locator(f"#cmd-{page.get_attribute('#cmd-form', 'data-last-id')}")


def _expect():
    from playwright.sync_api import expect

    expect.set_options(timeout=PAGE_TIMEOUT_MS)
    return expect


# --- the page, against a real agent ------------------------------------------------------------


@pytest.mark.req("GND-003")
def test_page_shows_telemetry_moving(console, page, tmp_path):
    _open(page, console)
    first = page.text_content("#tm-uptime_s .value")
    page.wait_for_function("v => document.querySelector('#tm-uptime_s .value').textContent !== v", arg=first)
    assert float(page.text_content("#tm-uptime_s .value")) > float(first)
    expect = _expect()
    expect(page.locator("#link-state")).to_have_attribute("data-state", "ok")
    expect(page.locator("#dict-state")).to_have_attribute("data-state", "ok")
    expect(page.locator("#tm-mode .value")).to_have_text("SAFE")
    assert page.locator(".plot[data-channel=uptime_s] canvas").count() == 1
    page.wait_for_function("() => /push lag p99 [0-9.]+ ms/.test(document.getElementById('lag').textContent)")
    _screenshot(page, tmp_path, "telemetry")


def test_plot_zooms_on_drag_and_resets_on_double_click(console, page, tmp_path):
    _open(page, console)
    canvas = page.locator(".plot[data-channel=uptime_s] canvas")
    box = canvas.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=5)
    page.mouse.up()
    label = page.locator(".plot[data-channel=uptime_s] .title span").nth(1)
    _expect()(label).to_have_text("zoomed (double-click: live)")
    canvas.dblclick()
    _expect()(label).to_have_text("live")


@pytest.mark.req("GND-003")
def test_commands_from_the_generated_form_show_every_stage(console, page, tmp_path):
    _open(page, console)
    expect = _expect()
    noop = _send_from_form(page, "NOOP")
    expect(noop).to_have_attribute("data-state", "completed", timeout=COMMAND_TIMEOUT_MS)
    ping = _send_from_form(page, "PING", {"token": 5})
    expect(ping).to_have_attribute("data-state", "completed", timeout=COMMAND_TIMEOUT_MS)
    for stage in ("sent", "accepted", "started", "completed"):
        expect(ping.locator(f".stage[data-stage={stage}]")).to_have_attribute("data-ok", "true")
    result = json.loads(ping.locator(".result").text_content())
    assert result["token"] == 5 and result["mode"] == "SAFE"
    _screenshot(page, tmp_path, "commands")


def test_hazardous_command_needs_confirmation_and_refusal_shows_reason(console, page, tmp_path):
    _open(page, console)
    expect = _expect()
    page.select_option("#cmd-select", "SET_MODE")
    expect(page.locator("#cmd-hazard")).to_be_visible()
    expect(page.locator("#cmd-send")).to_be_disabled()
    assert page.locator("#arg-mode option").all_text_contents()[1:] == ["SAFE", "IDLE", "COMPUTE"]
    row = _send_from_form(page, "SET_MODE", {"mode": "COMPUTE"}, confirm=True)
    expect(row).to_have_attribute("data-state", "failed", timeout=COMMAND_TIMEOUT_MS)
    expect(row.locator(".stage[data-stage=accepted]")).to_have_attribute("data-ok", "true")
    expect(row.locator(".stage[data-ok=false]")).to_have_count(1)
    reason = row.locator(".reason").text_content()
    assert reason.startswith("NOT_ALLOWED_IN_MODE:") and "SAFE" in reason and "IDLE first" in reason, reason
    expect(page.locator("#cmd-confirm")).not_to_be_checked()  # one confirmation, one command
    _screenshot(page, tmp_path, "refused")


def test_form_refuses_out_of_range_arguments_before_sending(console, page):
    _open(page, console)
    page.select_option("#cmd-select", "TRAIN_START")
    page.fill("#arg-dataset", "digits")
    page.fill("#arg-steps", "0")  # below its minimum of 1
    page.click("#cmd-send")
    _expect()(page.locator("#cmd-error")).to_have_text("fix the highlighted arguments")
    assert page.locator("#cmd-history tbody tr").count() == 0


@pytest.mark.req("GND-002", "GND-003")
def test_alarm_raises_is_acknowledged_and_clears(console, page, tmp_path, ipc_url, make_client):
    _open(page, console)
    expect = _expect()
    raw = make_client(ipc_url)  # a second console, to send what no form would
    assert raw.link.send(b"\x17\x01 not a space packet")
    alarm = page.locator("#alarm-tc_bad_packets")
    expect(alarm).to_have_attribute("data-status", "active")
    expect(alarm).to_have_attribute("data-level", "warning")
    expect(page.locator("#tm-tc_bad_packets")).to_have_attribute("data-state", "warning")
    expect(page.locator("#event-table tr[data-name=BAD_PACKET]")).to_have_count(1)
    _screenshot(page, tmp_path, "alarm_raised")
    alarm.locator("button.ack").click()
    expect(alarm).to_have_attribute("data-status", "acknowledged")
    expect(alarm.locator("button.ack")).to_be_disabled()
    # Back in limits: RESET_COUNTERS zeroes tc_bad_packets; acknowledged and nominal clears it.
    reset = _send_from_form(page, "RESET_COUNTERS")
    expect(reset).to_have_attribute("data-state", "completed", timeout=COMMAND_TIMEOUT_MS)
    expect(alarm).to_have_attribute("data-status", "cleared")
    expect(page.locator("#tm-tc_bad_packets")).to_have_attribute("data-state", "nominal")
    _screenshot(page, tmp_path, "alarm_cleared")


def test_rows_go_stale_when_the_agent_stops(ipc_url, start_agent, page):
    agent = start_agent(ipc_url)
    web = WebConsole(ipc_url, stale_s=1.5).start()
    try:
        _open(page, web)
        agent.stop()
        _expect()(page.locator("#tm-uptime_s")).to_have_attribute("data-state", "stale")
        _expect()(page.locator("#link-state")).to_have_attribute("data-state", "bad")
    finally:
        web.stop()


def test_archive_view_without_an_archive_says_so(console, page):
    _open(page, console)
    page.select_option("#archive-channel", "uptime_s")
    page.click("#archive-query")
    msg = page.locator("#archive-msg")
    _expect()(msg).to_have_attribute("data-status", "501")
    assert "no archive" in msg.text_content()


def test_archive_view_plots_what_the_console_recorded(ipc_url, start_agent, page, tmp_path):
    pytest.importorskip("ground.archive", reason="ground.archive not in this tree")
    start_agent(ipc_url)
    web = WebConsole(ipc_url, archive_path=tmp_path / "ground.sqlite", record=True).start()
    try:
        _open(page, web)
        page.wait_for_function("() => Number(document.querySelector('#tm-uptime_s .value').textContent) > 1.5")
        now = time.time()

        def local(t: float) -> str:
            return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")

        page.select_option("#archive-channel", "uptime_s")
        page.fill("#archive-from", local(now - 120))
        page.fill("#archive-to", local(now + 60))
        # The recorder commits every 0.5 s: ask again until the samples are there.
        msg = page.locator("#archive-msg")
        deadline = time.monotonic() + 15
        while True:
            page.click("#archive-query")
            _expect()(msg).to_have_attribute("data-status", "200")
            count = int(msg.text_content().split()[0])
            if count >= 3 or time.monotonic() > deadline:
                break
            page.wait_for_timeout(300)
        assert count >= 3, msg.text_content()
        assert page.locator("#archive-plot canvas").count() == 1
        _screenshot(page, tmp_path, "archive")
    finally:
        web.stop()


# --- the HTTP API ----------------------------------------------------------------------------------


def test_api_checks_commands_before_sending(console):
    status, body = _http(console.url + "api/dictionary")
    assert status == 200
    commands = {c["name"]: c for c in body["commands"]}
    assert commands["SET_MODE"]["hazardous"] and commands["SET_MODE"]["args"][0]["choices"] == ["SAFE", "IDLE", "COMPUTE"]
    assert {"name": "tc_bad_packets", "limits": {"warn_high": 1}}.items() <= next(
        c for c in body["channels"] if c["name"] == "tc_bad_packets").items()

    status, body = _http(console.url + "api/command", {"name": "PING", "args": {"token": -1}})
    assert (status, body["code"]) == (400, "OUT_OF_RANGE"), body
    status, body = _http(console.url + "api/command", {"name": "SET_MODE", "args": {"mode": "IDLE"}})
    assert (status, body["code"]) == (400, "NOT_CONFIRMED"), body
    status, body = _http(console.url + "api/command", {"name": "NOPE"})
    assert (status, body["code"]) == (400, "UNKNOWN_COMMAND"), body
    status, body = _http(console.url + "api/command", {"name": "NOOP"}, headers={"Origin": "http://evil.example"})
    assert status == 403, "another site's page must not command the spacecraft"
    status, body = _http(console.url + "api/command", {"name": "NOOP"}, headers={"Content-Type": "text/plain"})
    assert status == 415
    status, body = _http(console.url + "api/command", {"name": "PING", "args": {"token": 7}})
    assert status == 202 and body["state"] == "queued"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        cmd = next(c for c in _http(console.url + "api/state")[1]["commands"] if c["id"] == body["id"])
        if cmd["state"] in ("completed", "failed", "timeout"):
            break
        time.sleep(0.05)
    assert cmd["state"] == "completed" and cmd["result"]["token"] == 7, cmd
    assert [s["stage"] for s in cmd["stages"]] == ["sent", "accepted", "started", "completed"]


def test_api_archive_refuses_bad_queries(console):
    assert _http(console.url + "api/archive?channel=uptime_s&from=10&to=20")[0] == 501
    assert _http(console.url + "api/archive?channel=nope&from=10&to=20")[0] == 400
    assert _http(console.url + "api/archive?channel=uptime_s&from=20&to=10")[0] == 400
    assert _http(console.url + "api/archive?channel=uptime_s&from=yesterday&to=10")[0] == 400


def test_slow_page_loses_oldest_points_and_is_told_while_the_link_keeps_up(short_dir):
    """A page that reads nothing for a while: the link thread keeps taking packets in, the
    page's queue drops its oldest points, and the next batch says how many."""
    from aiohttp import ClientSession

    from ground.web.benchlag import SyntheticTelemetry

    url = f"zmq+ipc://{short_dir}/link"
    source = SyntheticTelemetry(url, points_per_s=10_000).start()
    web = WebConsole(url, connect_timeout_s=0, queue_points=500, batch_interval_s=0.5).start()
    found: dict = {}

    async def slow_page() -> None:
        async with ClientSession() as session, session.ws_connect(web.url + "ws") as ws:
            taken0, published0 = web.packets, source.published_packets
            await asyncio.sleep(1.5)  # the page is busy: nothing read, the server's queue for it fills
            found.update(taken=web.packets - taken0, published=source.published_packets - published0)
            async for msg in ws:
                body = json.loads(msg.data)
                if body.get("dropped", {}).get("points"):
                    found.update(body["dropped"])
                    return

    try:
        deadline = time.monotonic() + 10
        while web.packets == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        thread = threading.Thread(target=lambda: asyncio.run(asyncio.wait_for(slow_page(), 20)))
        thread.start()
        thread.join(30)
    finally:
        web.stop()
        source.stop()
    assert found.get("points", 0) > 0, f"no batch reported dropped points: {found}"
    assert found["points_total"] >= found["points"]
    # ~650 packets in 1.5 s: the link thread took them in while the page read nothing.
    assert found["published"] > 300 and found["taken"] >= 0.9 * found["published"], found


def test_push_lag_at_1000_points_per_second(browser):
    """The bench, short: 1000 points/s reach a real page and are drawn, with nothing dropped."""
    from ground.web.benchlag import run

    result = run(duration_s=3.0, warmup_s=1.0, browser=browser)
    assert result["points_dropped"] == 0 and result["source_dropped_packets"] == 0, result
    assert result["points_drawn"] >= 0.9 * result["points_published"], result
    # The lag itself is a figure for bench.ground, not an assertion here.
