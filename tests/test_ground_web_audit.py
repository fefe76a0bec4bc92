"""The web console against what a board may send that no well-behaved agent does: readings that are
not numbers, in a real browser (Debian's Chromium, headless, through Playwright) on a real GroundServer
and a real ZeroMQ link whose spacecraft side is a source publishing packets encoded by
flight.link.messages.Codec. Every wait is on a DOM condition with a timeout; nothing sleeps and asserts.
"""

from __future__ import annotations

import math
import re

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


@pytest.mark.req("GND-033")
def test_a_new_plot_starts_with_the_last_15_minutes_of_the_spacecrafts_own_clock(source_ground, pages):  # noqa: F811
    """The archive and the plot go by packet time, the agent's clock; the history was asked for by this computer's
    clock, so a board whose clock is off (here three weeks behind), or a simulated one, got "0 archived samples"
    over an archive full of them."""
    source, server = source_ground
    codec = Codec(DICTIONARY, Apid.AGENT)
    deliver(source, server, [_packet(codec, "AGENT_HK", T0_S + i, uptime_s=float(i), mode="COMPUTE",
                                     dict_hash=DICTIONARY.version_hash) for i in range(5)],
            lambda link: link.hk_time_s == T0_S + 4)
    page = pages(server, "vera")
    plot = page.locator(".plot[data-channel=uptime_s]")  # opened with the page
    expect = _expect()
    expect(plot).to_have_attribute("data-history", "archive")
    expect(plot.locator(".msg")).to_have_text("5 archived samples from the last 15 minutes, then live")
    assert page.evaluate("() => S.plots.find((p) => p.channel === 'uptime_s').ring.n") == 5


@pytest.mark.req("GND-003", "GND-040")
def test_a_played_back_event_is_marked_and_placed_by_its_time_not_on_top(source_ground, pages):  # noqa: F811
    """An event the agent plays back from its store happened out of contact, before what came live meanwhile: it
    went on top of the table, unmarked, an old event read as the newest. Its text is the agent's: shown as text."""
    source, server = source_ground
    codec = Codec(DICTIONARY, Apid.AGENT)
    page = pages(server, "alice")

    def started(boot: int, link: str, t_s: float) -> bytes:
        return codec.encode_event("AGENT_STARTED", {"boot_count": boot, "previous_stop": "clean", "dict_hash": "x",
                                                    "link": link, "hal": "sim"}, t_s)

    hostile = "<img src=x onerror=alert(1)>"
    deliver(source, server, [started(2, hostile, T0_S + 100)], lambda link: len(link.events) >= 1)
    deliver(source, server, [codec.encode_playback([started(1, "old", T0_S)], T0_S + 101)],
            lambda link: len(link.events) >= 2)
    expect = _expect()
    rows = page.locator("#event-table tbody tr")
    expect(rows).to_have_count(2)

    def shown(p) -> list[list[str]]:
        return p.locator("#event-table tbody tr").evaluate_all(
            "rs => rs.map(r => [r.cells[0].textContent, r.cells[2].textContent, r.dataset.playedBack])")

    day = _day_shown(T0_S)
    want = [[f"{day}12:01:40.000", "AGENT_STARTED", "false"], [f"{day}12:00:00.000", "AGENT_STARTED (played back)",
                                                                  "true"]]
    assert shown(page) == want
    expect(rows.first.locator("td").nth(3)).to_contain_text(f"link {hostile},")
    expect(page.locator("#event-table img")).to_have_count(0)
    later = pages(server, "vera")  # from the snapshot, which holds them in the order they came: the same
    expect(later.locator("#event-table tbody tr")).to_have_count(2)
    assert shown(later) == want


@pytest.mark.req("GND-042", "GND-003")
def test_a_command_of_unknown_outcome_says_why_on_the_page(short_dir, make_ground, users_file, pages):  # noqa: F811
    """A command sent with no report back is "unknown" and the server asks the agent: the row said "unknown" alone,
    the server's reason (it may have run; the agent is asked) on no screen, not even on hover."""
    from flight.link.transport import open_flight_link
    from ground.queue import Timeouts
    from ground.server import quick_config
    from tests.test_ground_web import _send_from_form

    url = f"zmq+ipc://{short_dir}/link"
    source = open_flight_link(url)  # the agent's end, which never answers
    try:
        server = make_ground(quick_config(url, port=0, archive=None, users=users_file,
                                          timeouts=Timeouts(accepted_s=0.5)), connect_timeout_s=0)
        codec = Codec(DICTIONARY, Apid.AGENT)
        deliver(source, server, [_packet(codec, "AGENT_HK", T0_S, uptime_s=1.0, mode="COMPUTE",
                                         dict_hash=DICTIONARY.version_hash)], lambda link: link.connected)
        page = pages(server, "alice")
        row = _send_from_form(page, "NOOP")
        expect = _expect()
        expect(row).to_have_attribute("data-state", "unknown")
        note = row.locator("td.result-cell .note")
        expect(note).to_contain_text("asked: outcome unknown: the same cmd_id sent again")
        expect(row.locator("span.stage[data-stage=unknown]")).to_have_attribute(
            "title", re.compile(r"UTC: sent, no report in 0\.5 s: it may not have reached the agent, or it ran"))
    finally:
        source.close()


def _day_shown(t_s: float) -> str:
    """The date the page puts before a time of another day than today (UTC)."""
    import time

    day = time.strftime("%Y-%m-%d", time.gmtime(t_s))
    return "" if day == time.strftime("%Y-%m-%d", time.gmtime()) else f"{day} "


@pytest.mark.req("GND-003", "GND-002")
def test_an_event_or_an_alarm_of_another_day_shows_its_date(source_ground, pages):  # noqa: F811
    """The events from the archive and an alarm latched until acknowledged go back days: the time of day alone
    read an alarm raised three weeks ago (by the board's clock) as one of today. Today's keep the time alone."""
    import time

    source, server = source_ground
    codec = Codec(DICTIONARY, Apid.AGENT)
    page = pages(server, "alice")
    now_s = round(time.time())
    deliver(source, server, [_packet(codec, "AGENT_HK", T0_S, uptime_s=1.0, mode="COMPUTE", mem_pct=99.0,
                                     dict_hash=DICTIONARY.version_hash),
                             codec.encode_event("PING_RECEIVED", {"token": 7}, now_s)],
            lambda link: "mem_pct" in link.alarms.alarms and len(link.events) >= 1)
    expect = _expect()
    expect(page.locator("#alarm-mem_pct td.time")).to_have_text(f"{_day_shown(T0_S)}12:00:00.000")
    today = time.strftime("%H:%M:%S.000", time.gmtime(now_s))
    event = page.locator("#event-table tr[data-name=PING_RECEIVED] td.time")
    expect(event).to_have_text(f"{_day_shown(now_s)}{today}")


@pytest.mark.req("GND-034", "GND-033", "GND-025")
def test_housekeeping_played_back_after_a_gap_never_sets_the_pages_newest_time_back(source_ground, pages):  # noqa: F811
    """Found in audit: a packet the agent plays back from its store after a gap, older than another type's newest,
    set the page's newest telemetry time (the plan's "now" and staleness, a new plot's 15 minutes) back to its own
    time, as it did the server's: a plan ten minutes older than the live telemetry read current again. Its values
    still reach their channels."""
    from tests.test_ground_plan_archive import encode, make_plan

    source, server = source_ground
    codec = Codec(DICTIONARY, Apid.AGENT)
    page = pages(server, "vera")
    deliver(source, server, [encode(codec, make_plan(T0_S)),
                             _packet(codec, "AGENT_HK", T0_S + 600.0, uptime_s=600.0, mode="COMPUTE",
                                     dict_hash=DICTIONARY.version_hash)],
            lambda link: link.plan is not None and link.hk_time_s == T0_S + 600.0)
    expect = _expect()
    expect(page.locator("#plan-state")).to_have_text("STALE: made 10 min before the newest telemetry")
    played = codec.encode_playback([_packet(codec, "POWER_HK", T0_S + 10.0, bus_voltage_v=7.5)], T0_S + 601.0)
    deliver(source, server, [played], lambda link: link.latest.get("bus_voltage_v", (None, None))[1] == T0_S + 10.0)
    page.wait_for_function("(t) => S.crafts.get('sunlit-1').values.get('bus_voltage_v')?.t === t", arg=T0_S + 10.0)
    assert page.evaluate("() => S.crafts.get('sunlit-1').hkTimeS") == T0_S + 600.0
    assert page.evaluate("() => planState(S.crafts.get('sunlit-1')).state") == "stale"
    later = pages(server, "vera")  # from the snapshot: the same
    expect(later.locator("#plan-state")).to_have_text("STALE: made 10 min before the newest telemetry")
    assert later.evaluate("() => S.crafts.get('sunlit-1').hkTimeS") == T0_S + 600.0
