"""Leftovers of the web console and the file CLI found in audit: a page whose WebSocket the server refuses as one
too many, a page whose server went away, and a ``file put`` priority out of range. Real parts: a GroundServer,
the agent as a process on a real ZeroMQ link where the link matters, Debian's Chromium headless through
Playwright, and ``sunlit-ground`` as a subprocess. Every wait is on a DOM condition with a timeout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_ground_web import (PAGE_TIMEOUT_MS, SC, _expect, _live, _log_in, _token, browser,  # noqa: F401
                                   make_ground, users_file)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def context(browser):  # noqa: F811
    """A browser context of its own, not ``pages()``: Chromium logs a refused socket and a server gone as
    errors, as it should; page errors (the script's own) still fail the test."""
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    errors: list[str] = []
    ctx.on("page", lambda page: page.on("pageerror", lambda exc: errors.append(str(exc))))
    yield ctx
    ctx.close()
    assert not errors, "page errors:\n" + "\n".join(errors)


@pytest.mark.req("GND-035")
def test_a_socket_refused_as_one_too_many_is_said_on_the_page_and_tried_again(short_dir, make_ground,  # noqa: F811
                                                                               context):
    """Found in audit: a WebSocket refused with 429 (too many for the session) was tried again each second with
    "disconnected: reconnecting" and nothing else: the operator never learnt the server refused it, nor why. The
    page says so with the server's reason, tries again less often, and connects once a socket is free."""
    server = make_ground(f"zmq+ipc://{short_dir}/link", connect_timeout_s=0, max_sockets_per_session=1)
    first = context.new_page()
    first.set_default_timeout(PAGE_TIMEOUT_MS)
    _log_in(first, server, "alice")
    second = context.new_page()  # the same session: its socket is one too many
    second.set_default_timeout(PAGE_TIMEOUT_MS)
    second.goto(server.url)
    expect = _expect()
    state = second.locator("#ws-state")
    expect(state).to_have_text(re.compile(r"^refused: too many connections; trying again every \d+ s$"))
    expect(state).to_have_attribute("data-state", "bad")
    assert "this session has 1 open, at most 1" in state.get_attribute("title"), state.get_attribute("title")
    assert server.sockets_refused >= 1
    first.close()  # a socket freed: the next try gets it
    expect(state).to_have_text("connected")
    second.wait_for_selector("body[data-ready=true]")
    assert state.get_attribute("title") in (None, ""), "no refusal said once connected"


@pytest.mark.req("GND-025", "GND-031")
def test_the_link_is_said_unknown_not_silent_while_the_server_is_away(ipc_url, start_agent, make_ground,  # noqa: F811
                                                                       context):
    """Found in audit: with the server gone the link pill said "link SILENT N s" beside "disconnected", a claim on
    the spacecraft's link the page had no way to know (the agent was sending all along). It says the link is
    unknown until the server is back, the values themselves going stale as before."""
    start_agent(ipc_url)
    server = make_ground(ipc_url)
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    _log_in(page, server, "alice")
    _live(page)
    expect = _expect()
    link = page.locator("#link-state")
    expect(link).to_have_attribute("data-state", "ok")
    server.stop()
    expect(page.locator("#ws-state")).to_have_attribute("data-state", "bad")
    # Past the spacecraft's stale_after_s (the values say so): where the page used to claim the link silent
    expect(page.locator("#tm-uptime_s")).to_have_attribute("data-state", "stale")
    assert link.text_content() == "link: unknown (no live connection)", link.text_content()
    assert link.get_attribute("data-state") == "unknown"
    assert re.search(r"last packet the page heard of came \d+ s ago", link.get_attribute("title")), \
        link.get_attribute("title")


@pytest.mark.req("GND-025", "GND-056")
def test_a_put_priority_out_of_range_is_refused_before_the_upload(short_dir, make_ground, tmp_path):  # noqa: F811
    """Found in audit: ``file put --priority -5`` through the server sent the whole file up and was refused only
    then, naming ``priority`` as the server's field. The option is checked first, naming it and the range the
    agent takes; the server hears nothing of it. The ends of the range are taken."""
    server = make_ground(f"zmq+ipc://{short_dir}/link", connect_timeout_s=0)
    env = {**os.environ, "SUNLIT_GROUND_SERVER": server.url, "SUNLIT_GROUND_TOKEN": _token(server, "alice")}
    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(4096))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ground.cli", "file", *args], capture_output=True, text=True,
                              env=env, timeout=120, cwd=REPO)

    refused_before = server.status()["refused_requests"]
    for args in (("put", str(local), "staging/up.bin", "--priority", "-5"),
                 ("get", "products/x.npz", "--priority", "256")):
        out = cli(*args)
        last = out.stderr.strip().splitlines()[-1]
        assert out.returncode == 2 and "--priority" in last and "from 0 to 255" in last, out.stderr
        assert "Traceback" not in out.stderr
    assert server.status()["refused_requests"] == refused_before, "nothing reached the server"
    assert server.links[SC].files.snapshot() == [], "no transfer made"
    out = cli("put", str(local), "staging/up.bin", "--priority", "255", "--no-wait")
    assert out.returncode == 0, out.stdout + out.stderr
    assert [t["priority"] for t in server.links[SC].files.snapshot()] == [255]


@pytest.mark.req("GND-031", "GND-057")
def test_the_file_link_and_push_lag_are_not_said_live_while_the_server_is_away(ipc_url, start_agent,
                                                                              make_ground, context,  # noqa: F811
                                                                              tmp_path):
    """Found in audit: with the server gone the Files pill went on saying "file link: in contact" (green) and the
    header "push lag p99 N ms", the last word of a server the page no longer hears: claims on a contact and a push
    path the page had no way to know of, beside "disconnected". Both say they are unknown until it is back."""
    start_agent(ipc_url)
    server = make_ground(ipc_url, archive=tmp_path / "ground.sqlite")
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    _log_in(page, server, "alice")
    _live(page)
    expect = _expect()
    files, lag = page.locator("#files-state"), page.locator("#lag")
    expect(files).to_have_text("file link: in contact")
    expect(lag).to_have_text(re.compile(r"^push lag p99 \d+\.\d ms$"))
    server.stop()
    expect(page.locator("#ws-state")).to_have_attribute("data-state", "bad")
    expect(page.locator("#link-state")).to_have_text("link: unknown (no live connection)")
    assert files.text_content() == "file link: unknown (no live connection)", files.text_content()
    assert files.get_attribute("data-state") == "unknown"
    assert lag.text_content() == "push lag: — (no live connection)", lag.text_content()
