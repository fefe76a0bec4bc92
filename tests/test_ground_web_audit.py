"""The web console against what a board may send that no well-behaved agent does: readings that are
not numbers, in a real browser (Debian's Chromium, headless, through Playwright) on a real GroundServer
and a real ZeroMQ link whose spacecraft side is a source publishing packets encoded by
flight.link.messages.Codec. Every wait is on a DOM condition with a timeout; nothing sleeps and asserts.
"""

from __future__ import annotations

import math

import pytest

from flight.link.apid import Apid
from flight.link.definitions import DICTIONARY
from flight.link.messages import Codec
from tests.test_ground_plan_archive import T0_S
from tests.test_ground_server import wait_until
from tests.test_ground_plan_web import deliver, source_ground  # noqa: F401 - a fixture
from tests.test_ground_web import _expect, browser, make_ground, pages, users_file  # noqa: F401

SC = "sunlit-1"


def _packet(codec: Codec, name: str, t_s: float, **values) -> bytes:
    packet = DICTIONARY.packet_by_name[name]
    body = {channel: None for channel in packet.channels}
    body.update(values)
    return codec.encode_hk(packet.sid, body, t_s)


@pytest.mark.req("GND-002", "GND-003", "GND-031")
def test_a_reading_of_infinity_is_judged_by_its_limits_as_the_servers_alarms_judge_it(source_ground, pages):  # noqa: F811
    """JSON carries the infinities and NaN as text (hub.json_safe); the page judged that text "nominal",
    so a board reading +inf % of memory (critical high at 95) showed a green row beside the critical alarm
    the server raised for it. NaN on a channel with limits is no reading, as the server has it."""
    source, server = source_ground
    codec = Codec(DICTIONARY, Apid.AGENT)
    page = pages(server, "vera")
    agent_hk = _packet(codec, "AGENT_HK", T0_S, mode="COMPUTE", uptime_s=1.0, dict_hash=DICTIONARY.version_hash,
                       mem_pct=math.inf, cpu_pct=math.nan)
    power_hk = _packet(codec, "POWER_HK", T0_S, bus_voltage_v=-math.inf)
    deliver(source, server, [agent_hk, power_hk],
            lambda link: {"mem_pct", "bus_voltage_v"} <= set(link.alarms.alarms) and link.hk_time_s == T0_S)
    states = {name: server.links[SC].alarms.alarms[name].state for name in ("mem_pct", "bus_voltage_v")}
    assert states == {"mem_pct": "critical", "bus_voltage_v": "critical"}, "the server's own judgement"
    expect = _expect()
    expect(page.locator("#alarm-mem_pct")).to_have_attribute("data-level", "critical")
    expect(page.locator("#tm-mem_pct")).to_have_attribute("data-state", "critical")
    expect(page.locator("#tm-mem_pct td.value")).to_have_text("inf")
    expect(page.locator("#tm-bus_voltage_v")).to_have_attribute("data-state", "critical")
    expect(page.locator("#tm-bus_voltage_v td.value")).to_have_text("-inf")
    expect(page.locator("#alarm-mem_pct td.now")).to_have_text("inf % (critical)")
    expect(page.locator("#tm-cpu_pct")).to_have_attribute("data-state", "na")
    expect(page.locator("#tm-cpu_pct td.state")).to_have_text("not available")


@pytest.mark.req("GND-006", "GND-033")
def test_a_double_click_on_the_archive_query_draws_one_plot(source_ground, pages):  # noqa: F811
    """Each query's answer drew its own plot: two queries on their way at once (a double click, or
    Query pressed again before the answer) left two plots under one message, the first one never
    disposed (its listeners kept) nor counted."""
    source, server = source_ground
    codec = Codec(DICTIONARY, Apid.AGENT)
    deliver(source, server, [_packet(codec, "AGENT_HK", T0_S + i, uptime_s=float(i), mode="COMPUTE",
                                     dict_hash=DICTIONARY.version_hash) for i in range(3)],
            lambda link: link.hk_time_s == T0_S + 2)
    page = pages(server, "vera")
    page.fill("#archive-from", "2026-11-16T11:59:00")
    page.fill("#archive-to", "2026-11-16T12:01:00")
    held = []
    page.route("**/api/archive?*", lambda route: held.append(route))  # let through in the order the test chooses
    # Two queries before either answer (a double click makes them), the second for another channel.
    page.evaluate("""() => {
        const form = document.getElementById("archive-form"), channel = document.getElementById("archive-channel");
        channel.value = "uptime_s";
        form.requestSubmit();
        channel.value = "cpu_pct";
        form.requestSubmit();
    }""")
    wait_until(lambda: page.evaluate("0") == 0 and len(held) == 2, what="both archive requests")
    first, second = sorted(held, key=lambda route: "cpu_pct" in route.request.url)
    expect = _expect()
    second.continue_()
    expect(page.locator("#archive-msg")).to_contain_text("3 samples of cpu_pct")
    with page.expect_event("requestfinished", predicate=lambda request: "uptime_s" in request.url):
        first.continue_()  # the older query's answer, last
    # A request answered after it: by then the page has taken the older answer in.
    page.evaluate("async () => { await (await fetch('/api/session')).json(); }")
    assert page.locator("#archive-plot .plot").count() == 1
    expect(page.locator("#archive-plot .plot .title")).to_contain_text("cpu_pct")
    assert page.evaluate("() => S.plots.filter((p) => !p.live).length") == 1

@pytest.mark.req("AGT-070", "GND-025", "GND-031")
def test_the_next_pass_line_says_when_no_packet_brings_it_any_more(source_ground, pages):  # noqa: F811
    """The line is the agent's countdown as its SCHEDULE_HK last said it: it said "none predicted" before
    any came, and after LOS (no telemetry) "in contact ... LOS in 3 s" until the next pass, never stale."""
    import re

    source, server = source_ground
    codec = Codec(DICTIONARY, Apid.AGENT)
    page = pages(server, "vera")
    expect = _expect()
    expect(page.locator("#next-pass")).to_have_text("next pass: not known yet (no SCHEDULE_HK received)")
    schedule = _packet(codec, "SCHEDULE_HK", T0_S, schedule_entries=0, schedule_held=0, schedule_released=0,
                       sequence_running="", sequence_step=0, next_aos_in_s=0.0, next_los_in_s=3.0,
                       next_pass_station="svalbard")
    deliver(source, server, [schedule], lambda link: link.latest.get("next_los_in_s", (None,))[0] == 3.0)
    expect(page.locator("#next-pass")).to_have_text(re.compile(r"^in contact over svalbard: LOS in 3 s"))
    # No packet since: within the spacecraft's stale_after_s (3 s here) the line says how old it is.
    expect(page.locator("#next-pass")).to_have_attribute("data-state", "stale")
    expect(page.locator("#next-pass")).to_have_text(
        re.compile(r"^in contact over svalbard: LOS in 3 s \(stale: said \d+(\.\d)? s ago\)$"))
