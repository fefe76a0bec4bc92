"""The web console's Files panel in a real browser (Debian's Chromium, headless, through
Playwright) against a real GroundServer on a real ZeroMQ link, whose spacecraft side is a
CFDP entity standing in for the agent (entity 2, its own thread, paced at a rate the test
chooses so that a transfer takes seconds). Every wait is on a DOM condition with a timeout.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from flight.files.entity import FileEntity
from flight.link.apid import Apid
from flight.link.definitions import DICTIONARY
from flight.link.messages import Codec
from flight.link.packets import unpack
from ground.files import DOWNLINK_TOPS, UPLINK_TOPS
from tests.test_ground_receipts import products  # noqa: F401 - products a real worker wrote
from tests.test_ground_web import _expect, browser, make_ground, pages, users_file  # noqa: F401

SC = "sunlit-1"

pytestmark = pytest.mark.system


class LinkStandIn:
    """The agent's end of a real link, its CFDP part: PDUs in from the ground's TC(141,1),
    out as TM(141,1) at ``rate_bps``, and housekeeping twice a second (the ground's contact).
    With ``held_after_bytes`` set, what it sends stops there until ``release`` is set: a
    transfer part-way for as long as the test looks at it, whatever the machine's load."""

    def __init__(self, link, root, rate_bps: float):
        self.link = link
        self.root = root
        self.rate_bps = rate_bps
        self.codec = Codec(DICTIONARY, Apid.AGENT)
        self.entity = FileEntity(2, 1, root, time.monotonic, read_tops=DOWNLINK_TOPS, write_tops=UPLINK_TOPS)
        self.lock = threading.Lock()
        self.held_after_bytes: int | None = None
        self.release = threading.Event()
        self._pulled = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="standin", daemon=True)

    def start(self) -> LinkStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def send(self, name: str, data: bytes) -> None:
        (self.root / name).parent.mkdir(parents=True, exist_ok=True)
        (self.root / name).write_bytes(data)
        with self.lock:
            self.entity.put(name, f"downlink/{name}", 2, 5)

    def _run(self) -> None:
        last = hk = time.monotonic()
        values = {name: None for name in DICTIONARY.packet_by_name["AGENT_HK"].channels}
        values.update(mode="IDLE", dict_hash=DICTIONARY.version_hash)
        while not self._stop.wait(0.02):
            now = time.monotonic()
            with self.lock:
                for inbound in self.link.receive():
                    pdu = Codec.file_pdu(unpack(inbound.packet))
                    if pdu is not None:
                        self.entity.receive(pdu)
                budget = int(self.rate_bps * (now - last))
                if self.held_after_bytes is not None and not self.release.is_set():
                    budget = max(0, min(budget, self.held_after_bytes - self._pulled))
                for pdu in self.entity.pull(budget):
                    self._pulled += len(pdu)
                    self.link.publish(self.codec.encode_file_pdu_tm(pdu, time.time()))
            last = now
            if now - hk >= 0.5:
                hk = now
                self.link.publish(self.codec.encode_hk(DICTIONARY.packet_by_name["AGENT_HK"].sid,
                                                       {**values, "uptime_s": now}, time.time()))
            self.link.flush()


@pytest.fixture
def standin_ground(short_dir, make_ground, tmp_path):  # noqa: F811 - make_ground is the imported fixture
    from flight.link.transport import open_flight_link

    url = f"zmq+ipc://{short_dir}/link"
    source = open_flight_link(url)
    (tmp_path / "agent").mkdir()
    standin = LinkStandIn(source, tmp_path / "agent", rate_bps=60_000.0).start()
    try:
        yield make_ground(url, archive=tmp_path / "ground.sqlite", connect_timeout_s=0), standin
    finally:
        standin.stop()
        source.close()


@pytest.mark.req("GND-057", "GND-003")
def test_the_files_panel_shows_each_transfer_with_its_progress(standin_ground, pages, tmp_path):  # noqa: F811
    server, standin = standin_ground
    expect = _expect()
    page = pages(server, "alice")
    viewer = pages(server, "vera")
    expect(page.locator("#files-state")).to_have_text("file link: in contact")
    assert viewer.locator("#file-get-form").count() == 0 and viewer.locator("#file-put-form").count() == 0

    data = os.urandom(300_000)  # five seconds at 60 kB/s: progress pushed twice a second
    standin.held_after_bytes = 100_000  # held a third of the way until the page has shown it
    standin.send("products/scene-7.tif", data)
    row = "#file-table tr[data-direction=down]"
    page.wait_for_function(f"""() => {{
        const r = document.querySelector("{row}");
        return r && r.dataset.state === "active" && Number(r.dataset.pct) > 0 && Number(r.dataset.pct) < 100;
    }}""")
    expect(page.locator(f"{row} td.file")).to_have_text("products/scene-7.tif")
    expect(page.locator(f"{row} td.progress span")).to_contain_text("% · ")
    expect(page.locator(f"{row} td.progress span")).to_contain_text("of 300.0 kB")
    assert 0 < page.locator(f"{row} progress").evaluate("p => p.value") < 100
    expect(viewer.locator(row)).to_have_count(1)  # every page sees it
    standin.release.set()
    expect(page.locator(row)).to_have_attribute("data-state", "done", timeout=30_000)
    expect(page.locator(row)).to_have_attribute("data-pct", "100")
    expect(page.locator(f"{row} td.progress span")).to_have_text("100% · 300.0 kB of 300.0 kB")
    expect(page.locator(f"{row} a.file-save")).to_have_count(1)
    rid = page.locator(row).get_attribute("id")[len("file-"):]
    kept = server.files_dir / SC / "downlink/products/scene-7.tif"
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    with page.expect_download() as saving:
        page.click(f"{row} a.file-save")
    saved = tmp_path / "saved.tif"
    saving.value.save_as(saved)
    assert saved.read_bytes() == data, f"Save fetched /api/files/{rid}/content whole"

    # Up from the page: a file chosen, its name on board filled in, sent, delivered.
    up = tmp_path / "model.onnx"
    up.write_bytes(os.urandom(40_000))
    page.set_input_files("#file-put-file", str(up))
    expect(page.locator("#file-put-name")).to_have_value("staging/model.onnx")
    page.click("#file-put")
    up_row = "#file-table tr[data-direction=up]"
    expect(page.locator(f"{up_row} td.file")).to_have_text("staging/model.onnx")
    expect(page.locator(up_row)).to_have_attribute("data-state", "done", timeout=30_000)
    assert (standin.root / "staging/model.onnx").read_bytes() == up.read_bytes()
    # The send's answer (queued) may arrive after the pushes of so short a transfer: the page kept the newest.
    expect(page.locator(f"{up_row} td.progress span")).to_have_text("100% · 40.0 kB of 40.0 kB")
    page.fill("#file-get-name", "../etc/passwd")
    page.click("#file-get")
    expect(page.locator("#files-error")).to_contain_text("is not a plain name")


@pytest.mark.req("GND-059", "GND-057")
def test_the_files_panel_says_whether_the_board_vouches_for_a_product_that_came_down(standin_ground, pages,  # noqa: F811
                                                                                     products):  # noqa: F811
    server, standin = standin_ground
    expect = _expect()
    page = pages(server, "vera")  # a viewer sees it too
    expect(page.locator("#files-state")).to_have_text("file link: in contact")
    standin.send("products/clean.json", products["clean"].with_suffix(".json").read_bytes())
    standin.send("products/noise.npz", os.urandom(3_000))
    standin.send("logs/agent.log", b"not a product")
    clean, noise, log = (f'#file-table tr:has(td.file:text-is("{name}"))'
                         for name in ("products/clean.json", "products/noise.npz", "logs/agent.log"))
    expect(page.locator(clean)).to_have_attribute("data-vouched", "true", timeout=30_000)
    expect(page.locator(f"{clean} td.state .reason")).to_have_text("VOUCHED: every tile checked and passed")
    expect(page.locator(noise)).to_have_attribute("data-vouched", "false", timeout=30_000)
    expect(page.locator(f"{noise} td.state .reason")).to_contain_text("NOT VOUCHED: not read as a product "
                                                                     "(products/noise.npz: ")
    expect(page.locator(log)).to_have_attribute("data-state", "done", timeout=30_000)
    expect(page.locator(log)).to_have_attribute("data-vouched", "")  # not a product: no verdict


@pytest.mark.req("GND-057")
def test_a_double_click_on_the_files_panel_sends_each_request_once(standin_ground, pages, tmp_path):  # noqa: F811
    """Found in audit: no button of the Files panel was disabled while its request went, so a double click
    queued two uploads, sent FILE_DOWNLINK twice or cancelled twice. Each request is held on its way (routed)
    while the page is looked at: the button is disabled until the answer, and one request went."""
    server, standin = standin_ground
    expect = _expect()
    page = pages(server, "alice")
    expect(page.locator("#files-state")).to_have_text("file link: in contact")
    held: dict[str, list] = {"get": [], "put": [], "cancel": []}
    page.route("**/api/files/get", lambda route: held["get"].append(route))
    page.route("**/api/files/put?*", lambda route: held["put"].append(route))
    page.route("**/api/files/*/cancel", lambda route: held["cancel"].append(route))

    def twice(what: str, selector: str) -> None:
        with page.expect_request(lambda r: r.method == "POST" and f"/{what}" in r.url):
            page.dblclick(selector)
        expect(page.locator(selector)).to_be_disabled()  # while its request is on its way
        assert len(held[what]) == 1, f"{len(held[what])} requests for one double click"
        held[what].pop().continue_()

    page.fill("#file-get-name", "products/x.json")
    twice("get", "#file-get")
    down = page.locator("#file-table tr[data-direction=down]")
    expect(down).to_have_count(1)  # requested: the stand-in answers no command
    expect(page.locator("#file-get")).to_be_enabled()

    up = tmp_path / "model.onnx"
    up.write_bytes(os.urandom(40_000))
    page.set_input_files("#file-put-file", str(up))
    twice("put", "#file-put")
    ups = page.locator("#file-table tr[data-direction=up]")
    expect(ups).to_have_count(1)
    expect(page.locator("#file-put")).to_be_enabled()

    twice("cancel", "#file-table tr[data-direction=down] button.file-cancel")
    expect(down).to_have_attribute("data-state", "cancelled")
    expect(page.locator("#files-error")).to_have_text("")  # no second cancel refused as over already
    expect(ups).to_have_count(1)
    assert not any(held.values())


@pytest.mark.req("GND-051", "GND-057")
def test_a_file_a_later_transfer_of_its_name_would_replace_is_kept_and_offered_and_a_changed_one_refused(
        standin_ground, pages):  # noqa: F811
    """Found in audit: the older transfer's content route (its Save link) served the newer file under the older
    SHA-256; since, a later transfer of the name keeps the older file beside it (+2), and both are offered, each
    its own. A file changed in the file area since it came is refused for its transfer, 410, saying so."""
    from tests.test_ground_server import http, login

    server, standin = standin_ground
    expect = _expect()
    page = pages(server, "vera")
    token = login(server, "vera")
    one, two = b"1" + os.urandom(5000), b"2" + os.urandom(7000)  # not taken for JSON by http()
    rows = page.locator("#file-table tr[data-direction=down]")
    standin.send("logs/agent.log", one)
    expect(rows).to_have_attribute("data-state", "done")
    first = rows.get_attribute("id")[len("file-"):]
    standin.send("logs/agent.log", two)
    expect(page.locator("#file-table tr[data-direction=down][data-state=done]")).to_have_count(2)
    second = next(i for i in (rows.nth(0).get_attribute("id"), rows.nth(1).get_attribute("id"))
                  if i != f"file-{first}")[len("file-"):]
    for record, data in ((first, one), (second, two)):
        status, _, headers = http(server, "GET", f"/api/files/{record}/content?spacecraft={SC}", token=token)
        assert status == 200 and headers["X-Sunlit-SHA256"] == hashlib.sha256(data).hexdigest()
        expect(page.locator(f"#file-{record} a.file-save")).to_have_count(1)
    expect(page.locator(f"#file-{first} td.file")).to_have_attribute("title", "ground: downlink/logs/agent+2.log")
    (server.files_dir / SC / "downlink/logs/agent+2.log").write_bytes(b"3" + os.urandom(5000))  # changed here
    status, answer, _ = http(server, "GET", f"/api/files/{first}/content?spacecraft={SC}", token=token)
    assert status == 410 and answer["code"] == "FILE_GONE" and "no longer holds the file" in answer["error"]


@pytest.mark.req("GND-057", "GND-051")
def test_save_of_a_file_no_longer_as_it_came_down_says_the_servers_reason(standin_ground, pages):  # noqa: F811
    """A file changed in the server's file area since it came is refused for its transfer (410); the Save link left it
    to the browser, whose download said only "failed", the server's reason on no screen."""
    server, standin = standin_ground
    expect = _expect()
    page = pages(server, "vera")
    rows = page.locator("#file-table tr[data-direction=down]")
    standin.send("logs/agent.log", b"1" + os.urandom(5000))
    expect(rows).to_have_attribute("data-state", "done")
    (server.files_dir / SC / "downlink/logs/agent.log").write_bytes(b"3" + os.urandom(5000))  # changed here
    downloads = []
    page.on("download", lambda download: downloads.append(download))
    page.click("#file-table a.file-save")
    expect(page.locator("#files-error")).to_contain_text(
        "save agent.log: transfer in-2-")
    expect(page.locator("#files-error")).to_contain_text("no longer holds the file this transfer brought down")
    # An answer after the click's: by then any download the click started has begun.
    page.evaluate("async () => { await (await fetch('/api/session')).json(); }")
    assert downloads == []
