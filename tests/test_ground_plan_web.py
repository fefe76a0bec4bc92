"""The web console's power plan panel in a real browser (Debian's Chromium, headless, through
Playwright) against a real GroundServer on a real ZeroMQ link, whose spacecraft side is a source
publishing packets encoded by flight.link.messages.Codec: the test chooses each plan and each
housekeeping time. Every wait is on a DOM condition with a timeout; nothing sleeps and asserts.
"""

from __future__ import annotations

import pytest

from flight.link.apid import Apid
from flight.link.definitions import DICTIONARY
from flight.link.messages import Codec
from ground.server import GroundServer
from tests.test_ground_plan_archive import T0_S, encode, hk, make_plan
from tests.test_ground_server import wait_until
from tests.test_ground_web import _expect, _screenshot, browser, make_ground, pages, users_file  # noqa: F401

SC = "sunlit-1"
HOSTILE = "<img src=x onerror=alert(1)>"  # a mode name is agent data: shown as text, never as markup


@pytest.fixture
def source_ground(short_dir, make_ground, tmp_path):  # noqa: F811 - make_ground is the imported fixture
    """The agent's side of a real link (no agent) and a server with an archive on it."""
    from flight.link.transport import open_flight_link

    url = f"zmq+ipc://{short_dir}/link"
    source = open_flight_link(url)
    try:
        yield source, make_ground(url, archive=tmp_path / "ground.sqlite", connect_timeout_s=0)
    finally:
        source.close()


def deliver(source, server: GroundServer, packets: list[bytes], done) -> None:
    """Publish until the server has them (a PUB/SUB link drops what it sends before the
    subscription; a resent packet is a duplicate the server drops)."""
    def delivered() -> bool:
        for raw in packets:
            source.publish(raw)
        source.receive()
        return done(server.links[SC])

    wait_until(delivered, what="the packets taken in by the server")


@pytest.mark.req("GND-034", "GND-003", "GND-025", "GND-031")
def test_the_plan_panel_draws_the_plan_and_says_when_it_is_stale(source_ground, pages, tmp_path):  # noqa: F811
    source, server = source_ground
    codec = Codec(DICTIONARY, Apid.AGENT)
    page = pages(server, "vera")  # a viewer: the plan is for every operator to see
    expect = _expect()
    expect(page.locator("#plan")).to_have_attribute("data-state", "none")
    expect(page.locator("#plan-state")).to_have_text("no plan")
    expect(page.locator("#plan-msg")).to_contain_text(f"no power plan received from {SC} yet")

    plan = make_plan(T0_S - 20.0, names=("7W", "15W", HOSTILE))
    deliver(source, server, [hk(codec, 1, T0_S), encode(codec, plan)],
            lambda link: link.plan is not None and link.hk_time_s == T0_S)
    expect(page.locator("#plan")).to_have_attribute("data-state", "current")
    expect(page.locator("#plan-state")).to_have_text("current")
    expect(page.locator("#plan-msg")).to_have_text("plan made 11:59:40 UTC, solve 3.5 ms, 70 steps of 120 s")
    chart = page.locator("#plan-chart svg")
    expect(chart).to_have_attribute("data-steps", "70")
    cells = chart.locator("rect.mode-cell")
    expect(cells).to_have_count(70)
    modes = cells.evaluate_all("cs => cs.map(c => c.dataset.mode)")
    assert modes == ["idle" if m < 0 else plan.mode_names[m] for m in plan.mode]
    fills = cells.evaluate_all("cs => cs.map(c => c.getAttribute('fill'))")
    idle_fill = {f for f, m in zip(fills, plan.mode) if m < 0}
    assert len(idle_fill) == 1 and idle_fill.isdisjoint(f for f, m in zip(fills, plan.mode) if m >= 0)
    assert len({f for f, m in zip(fills, plan.mode) if m >= 0}) == len({m for m in plan.mode if m >= 0})
    umbras = chart.locator("rect.umbra")
    expect(umbras).to_have_count(2)  # steps 20-34 and 60-65
    assert umbras.evaluate_all("rs => rs.map(r => [r.dataset.fromStep, r.dataset.toStep])") == [["20", "35"],
                                                                                                ["60", "66"]]
    expect(chart.locator("polyline.soc")).to_have_attribute("data-points", "71")
    expect(chart.locator("line.keep")).to_have_count(1)
    expect(chart.locator("g.axis.x text", has_text="now")).to_have_count(1)
    legend = page.locator("#plan-legend .legend-item[data-mode]")
    assert legend.evaluate_all("ls => ls.map(l => l.dataset.mode)") == ["idle", "7W", "15W", HOSTILE]
    expect(legend.nth(3)).to_have_text(HOSTILE)
    expect(page.locator("#plan img")).to_have_count(0)
    _screenshot(page, tmp_path, "plan-current")

    # Telemetry goes on ten minutes and no plan comes: stale, by the spacecraft's own clock.
    deliver(source, server, [hk(codec, 2, T0_S + 600.0)], lambda link: link.hk_time_s == T0_S + 600.0)
    expect(page.locator("#plan")).to_have_attribute("data-state", "stale")
    expect(page.locator("#plan-state")).to_have_text("STALE: made 10 min before the newest telemetry")
    expect(page.locator("#plan-state")).to_have_attribute("data-state", "bad")
    _screenshot(page, tmp_path, "plan-stale")

    # A new plan is pushed: drawn at once, current again.
    newer = make_plan(T0_S + 590.0, n=40, names=("7W", "15W"))
    deliver(source, server, [encode(codec, newer)], lambda link: link.plan["time_s"] == T0_S + 590.0)
    expect(page.locator("#plan-msg")).to_have_text("plan made 12:09:50 UTC, solve 3.5 ms, 40 steps of 120 s")
    expect(page.locator("#plan")).to_have_attribute("data-state", "current")
    expect(page.locator("#plan-chart rect.mode-cell")).to_have_count(40)
    expect(page.locator("#plan-chart rect.umbra")).to_have_count(1)
    assert page.locator("#plan-legend .legend-item[data-mode]").evaluate_all(
        "ls => ls.map(l => l.dataset.mode)") == ["idle", "7W", "15W"]


@pytest.mark.req("GND-034", "GND-025")
def test_a_page_opened_later_gets_the_plan_from_its_first_snapshot(source_ground, pages):  # noqa: F811
    source, server = source_ground
    codec = Codec(DICTIONARY, Apid.AGENT)
    deliver(source, server, [encode(codec, make_plan(T0_S)), hk(codec, 1, T0_S + 30.0)],
            lambda link: link.plan is not None and link.hk_time_s == T0_S + 30.0)
    page = pages(server, "alice")
    expect = _expect()
    expect(page.locator("#plan")).to_have_attribute("data-state", "current")
    expect(page.locator("#plan-chart rect.mode-cell")).to_have_count(70)
    page.click("#plan-refresh")  # the server's word again: the same plan
    expect(page.locator("#plan-msg")).to_have_text("plan made 12:00:00 UTC, solve 3.5 ms, 70 steps of 120 s")
    expect(page.locator("#plan-chart rect.mode-cell")).to_have_count(70)


@pytest.mark.req("AGT-070")
def test_the_passes_panel_shows_the_next_pass_the_agent_predicts(source_ground, pages):  # noqa: F811
    source, server = source_ground
    codec = Codec(DICTIONARY, Apid.AGENT)
    page = pages(server, "vera")
    expect = _expect()
    schedule_hk = DICTIONARY.packet_by_name["SCHEDULE_HK"]
    values = {name: None for name in schedule_hk.channels}
    values.update(schedule_entries=0, schedule_held=0, schedule_released=0, sequence_running="", sequence_step=0,
                  next_aos_in_s=125.4, next_los_in_s=725.0, next_pass_station="svalbard")
    packet = codec.encode_hk(schedule_hk.sid, values, T0_S)
    deliver(source, server, [hk(codec, 1, T0_S), packet], lambda link: link.hk_time_s == T0_S)
    expect(page.locator("#next-pass")).to_have_text("next pass over svalbard: AOS in 125 s, LOS in 725 s")
    values.update(next_aos_in_s=0.0, next_los_in_s=300.0)
    deliver(source, server, [codec.encode_hk(schedule_hk.sid, values, T0_S + 1.0)],
            lambda link: link.hk_time_s == T0_S + 1.0)
    expect(page.locator("#next-pass")).to_have_text("in contact over svalbard: LOS in 300 s")
