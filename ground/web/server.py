"""``sunlit-ground serve``: the operators' console in a browser.

Two threads around one :class:`~ground.client.GroundClient`:

- the *link thread* owns the client (ZeroMQ sockets belong to one thread): it polls the
  link, feeds alarms, hands each housekeeping packet to every browser's queue, and runs
  the commands browsers ask for, one at a time, with the client's verification and retries;
- the *web thread* runs aiohttp (HTTP and WebSocket on one port, one asyncio loop): static
  page, dictionary, commands, alarm acknowledgement, archive queries, and one sender task
  per browser that pushes what its queue holds at most once per ``batch_interval_s``.

The two meet only in :mod:`ground.web.hub` queues, which never block the link thread: a
browser that cannot keep up loses its oldest points and is told how many.

There is no login: anyone who can reach the port can command the spacecraft, which is why
``serve`` binds to loopback unless told otherwise. Requests from another site's page are
refused (Origin checked on the WebSocket and on every POST, which must be JSON).
"""

from __future__ import annotations

import asyncio
import json
import math
import queue
import signal
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from flight.link.definitions import DICTIONARY
from flight.link.dictionary import ArgumentError, Dictionary
from flight.link.messages import EventRecord, HkRecord, ParamRecord, Verification
from flight.link.transport import GroundLink
from ground.alarms import Alarm, AlarmManager, LimitStore
from ground.client import CommandTimeout, GroundClient, Received
from ground.web.hub import (
    DEFAULT_QUEUE_POINTS,
    LAG_WINDOW_MS,
    ClientQueue,
    LagTracker,
    Sample,
    batch_message,
    json_safe,
    weighted_percentile,
)

STATIC_DIR = Path(__file__).with_name("static")
DEFAULT_BATCH_INTERVAL_S = 0.05  # 20 pushes/s: a few frames' worth per push, well under what an operator notices
LINK_POLL_S = 0.02  # how long the link thread waits for telemetry before looking at queued commands
STATUS_PERIOD_S = 1.0
KEEP_EVENTS = 500
KEEP_COMMANDS = 200


def monotonic_ms() -> float:
    return time.monotonic() * 1000.0


class WebConsole:
    """The web console's server; ``start()`` runs it in background threads, ``stop()`` ends it.

    >>> console = WebConsole("zmq+ipc:///tmp/sunlit-link").start()   # doctest: +SKIP
    >>> console.url                                                   # doctest: +SKIP
    'http://127.0.0.1:40123/'
    """

    def __init__(
        self,
        link: str | GroundLink,
        host: str = "127.0.0.1",
        port: int = 0,
        archive_path: str | Path | None = None,
        *,
        record: bool = False,
        limits_path: str | Path | None = None,
        dictionary: Dictionary = DICTIONARY,
        batch_interval_s: float = DEFAULT_BATCH_INTERVAL_S,
        queue_points: int = DEFAULT_QUEUE_POINTS,
        stale_s: float = 10.0,
        command_timeout_s: float = 10.0,
        connect_timeout_s: float = 3.0,
    ):
        if batch_interval_s < 0:
            raise ValueError(f"batch_interval_s must be >= 0, got {batch_interval_s}")
        self.link = link
        self.host = host
        self.port = port
        self.archive_path = Path(archive_path) if archive_path is not None else None
        if record and self.archive_path is None:
            raise ValueError("record=True needs an archive_path to record into")
        self.record = record
        self.dictionary = dictionary
        self.batch_interval_s = batch_interval_s
        self.queue_points = queue_points
        self.stale_s = stale_s
        self.command_timeout_s = command_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.alarms = AlarmManager(dictionary, LimitStore(Path(limits_path) if limits_path else None))
        self._limits_sent: dict[str, Any] = {}
        self.alarms.listeners.append(self._on_alarm)
        self.lag = LagTracker()
        self.client: GroundClient | None = None
        self.wall_minus_mono_ms = time.time() * 1000.0 - monotonic_ms()

        self._clients: tuple[ClientQueue, ...] = ()  # replaced whole, so the link thread reads it lock-free
        self._clients_lock = threading.Lock()
        self._state_lock = threading.Lock()  # latest, events, commands: written by the link thread
        self._alarm_lock = threading.Lock()  # the AlarmManager: observed by the link thread, acknowledged by the web
        self._latest: dict[str, tuple[Any, float]] = {}
        self._events: deque[dict[str, Any]] = deque(maxlen=KEEP_EVENTS)
        self._commands: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._command_ids = count(1)
        self._jobs: queue.Queue[Callable[[GroundClient], None]] = queue.Queue()
        self.packets = 0
        self.last_packet_mono_s: float | None = None
        self.link_error = ""
        self.connected = False
        self.internal_errors = 0

        self._stop = threading.Event()
        self._link_thread: threading.Thread | None = None
        self._web_thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._archive_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sunlit-archive")
        self._archive: Any = None  # ground.archive.Archive, opened on the first query (or at start to record)
        self._recorder: Any = None
        self._status_future: asyncio.Task | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self.url = ""

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> WebConsole:
        """Bind the port, start both threads, return once the page can be loaded.

        The link thread opens the link itself; a link URL that cannot be used raises here.
        """
        if self._link_thread is not None:
            raise RuntimeError("WebConsole already started; make a new one to serve again")
        try:
            if self.record:
                from ground.archive import Archive, ArchiveRecorder

                self._archive = Archive(self.archive_path)
                self._recorder = ArchiveRecorder(self._archive)
            # The port first: a port in use is the likeliest mistake, and needs no link to report.
            self._web_thread = threading.Thread(target=self._web_main, name="sunlit-web", daemon=True)
            self._web_thread.start()
            self._started.wait()
            if self._start_error is not None:
                raise self._start_error
            link_ready = threading.Event()
            self._link_thread = threading.Thread(target=self._link_main, args=(link_ready,),
                                                 name="sunlit-web-link", daemon=True)
            self._link_thread.start()
            link_ready.wait()
            if self.client is None:
                raise self._start_error or RuntimeError("link thread failed to start")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close every page's socket, stop serving, stop the link thread and close the link."""
        self._stop.set()
        if self._loop is not None and self._web_thread is not None and self._web_thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10.0)
            except Exception as exc:  # noqa: BLE001 - stopping must go on whatever the web side does
                print(f"sunlit-ground serve: web shutdown: {exc}", file=sys.stderr)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._web_thread.join(10.0)
        if self._link_thread is not None:
            # A command in flight finishes first (at most command_timeout_s): its outcome matters.
            self._link_thread.join(self.command_timeout_s + 5.0)
        self._archive_pool.shutdown(wait=True, cancel_futures=True)
        if self._recorder is not None:
            self._recorder.close()  # writes what is still queued
            self._recorder = None
        if self._archive is not None:
            self._archive.close()
            self._archive = None

    def __enter__(self) -> WebConsole:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the link thread -----------------------------------------------------------------

    def _link_main(self, ready: threading.Event) -> None:
        try:
            client = GroundClient(self.link, self.dictionary)
        except Exception as exc:  # noqa: BLE001 - handed to start()'s caller
            self._start_error = exc
            ready.set()
            return
        client.listeners.append(self._take)
        if self._recorder is not None:
            self._recorder.attach(client)
        self.client = client
        ready.set()
        try:
            deadline = time.monotonic() + self.connect_timeout_s  # 0: do not ping (a synthetic source never answers)
            while not self.connected and not self._stop.is_set() and time.monotonic() < deadline:
                try:  # in short tries, so that stop() need not wait for a silent agent
                    client.connect(timeout_s=min(0.5, self.connect_timeout_s))
                    self.connected = True
                except TimeoutError:
                    self.link_error = f"agent not answering a PUS ping yet (link {self.link})"
            while not self._stop.is_set():
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    try:
                        client.poll(LINK_POLL_S)
                    except Exception as exc:  # noqa: BLE001 - a console keeps running; the page shows why
                        self.link_error = f"{type(exc).__name__}: {exc}"
                        self._stop.wait(0.5)
                    continue
                job(client)
        finally:
            client.close()

    def _take(self, item: Received) -> None:
        """Every packet the client takes in (in the link thread): fan out, keep, feed alarms.

        Never raises: an exception here would cost the client the rest of the packets it is
        taking in, and the other listeners (the archive recorder) theirs.
        """
        try:
            self._fan_out(item)
        except Exception as exc:  # noqa: BLE001 - counted and shown on every page's status line
            self.internal_errors += 1
            self.link_error = f"web console error on a packet: {type(exc).__name__}: {exc}"

    def _fan_out(self, item: Received) -> None:
        now_ms = monotonic_ms()
        self.packets += 1
        self.last_packet_mono_s = now_ms / 1000.0
        if item.packet is not None:
            self.connected = True
            if self.link_error.startswith("agent not answering"):
                self.link_error = ""
        if item.error:
            self._broadcast(self._ground_event("GROUND_BAD_PACKET", "WARNING_LO", f"undecodable packet: {item.error}"))
        if item.gap:
            self._broadcast(self._ground_event(
                "GROUND_GAP", "WARNING_LO",
                f"{item.gap} packet(s) missing before APID {item.packet.apid} seq {item.packet.seq_count}"))
        record = item.record
        if isinstance(record, HkRecord):
            channels = record.packet.channels
            sample = Sample(record.packet.sid, record.time_s,
                            tuple(json_safe(record.values.get(name)) for name in channels), now_ms)
            with self._state_lock:
                for name, value in zip(channels, sample.values):
                    self._latest[name] = (value, record.time_s)
            for client_queue in self._clients:
                client_queue.put_sample(sample)
            with self._alarm_lock:
                for name in channels:
                    self.alarms.observe(name, record.values.get(name), record.time_s)
        elif isinstance(record, EventRecord):
            message = {
                "kind": "event",
                "time_s": record.time_s,
                "name": record.event.name,
                "severity": record.event.severity.name,
                "text": record.text,
                "args": json_safe(record.args),
            }
            self._broadcast(message)
        elif isinstance(record, ParamRecord):
            with self._alarm_lock:
                self.alarms.observe_parameters(record.values)
                following = {ch.name: self.alarms.limits(ch.name).to_json() for ch in self.dictionary.channels
                             if ch.limits.params()}
            if following != self._limits_sent:  # the report comes every few seconds; changes are rare
                self._limits_sent = following
                self._broadcast({"kind": "limits", "limits": following})

    def _ground_event(self, name: str, severity: str, text: str) -> dict[str, Any]:
        return {"kind": "event", "time_s": time.time(), "name": name, "severity": severity, "text": text,
                "args": {}, "ground": True}

    def _broadcast(self, message: dict[str, Any]) -> None:
        if message.get("kind") == "event":
            with self._state_lock:
                self._events.append(message)
        for client_queue in self._clients:
            client_queue.put_control(message)

    def _on_alarm(self, what: str, alarm: Alarm) -> None:
        self._broadcast({"kind": "alarm", "what": what, "alarm": self._alarm_json(alarm)})

    @staticmethod
    def _alarm_json(alarm: Alarm) -> dict[str, Any]:
        out = json_safe(alarm.as_dict())
        out["status"] = "cleared" if alarm.cleared else ("acknowledged" if alarm.acknowledged else "active")
        return out

    # --- commands ------------------------------------------------------------------------

    def submit_command(self, name: str, args: dict[str, Any], confirm: bool = False, source: str = "web") -> dict:
        """Check a command against the dictionary and queue it for the link thread.

        Raises ArgumentError (nothing sent) for a bad name or argument, PermissionError for a
        hazardous command without ``confirm``. Returns the command's record; its stages then
        arrive on every page's WebSocket as they happen.
        """
        command = self.dictionary.command(name)
        values = command.validate_args(args)
        if command.hazardous and not confirm:
            raise PermissionError(f"{command.name} is hazardous: tick the confirmation to send it")
        record = {
            "kind": "command",
            "id": next(self._command_ids),
            "name": command.name,
            "args": json_safe(values),
            "hazardous": command.hazardous,
            "source": source,
            "state": "queued",
            "stages": [],
            "queued_s": time.time(),
            "cmd_id": None,
            "attempts": 0,
            "result": {},
            "outcome": "",
        }
        with self._state_lock:
            self._commands[record["id"]] = record
            while len(self._commands) > KEEP_COMMANDS:
                self._commands.popitem(last=False)
        self._broadcast(dict(record))
        self._jobs.put(lambda client: self._run_command(client, record, values))
        return dict(record)

    def _command_update(self, record: dict[str, Any], **changes: Any) -> None:
        with self._state_lock:
            record.update(changes)
            snapshot = json_safe(record)
        self._broadcast(snapshot)

    def _stage(self, record: dict[str, Any], stage: str, ok: bool = True, code: str = "", reason: str = "",
               result: dict | None = None) -> None:
        entry = {"stage": stage, "ok": ok, "at_s": time.time()}
        if code:
            entry["code"] = code
        if reason:
            entry["reason"] = reason
        with self._state_lock:
            stages = [*record["stages"], entry]
        changes: dict[str, Any] = {"stages": stages, "state": stage if ok else "failed"}
        if result:
            changes["result"] = json_safe(result)
        self._command_update(record, **changes)

    def _run_command(self, client: GroundClient, record: dict[str, Any], values: dict[str, Any]) -> None:
        def report(v: Verification) -> None:
            self._stage(record, v.stage.value, v.success, "" if v.success else v.code.name, v.reason, v.result)

        # GroundClient.send hands the packet to the link as its first step; "sent" is
        # noted just before that call (it has no hook between sending and waiting).
        self._stage(record, "sent")
        try:
            result = client.send(record["name"], values, wait="completed", timeout_s=self.command_timeout_s,
                                 on_report=report)
        except CommandTimeout as exc:
            self._stage(record, "timeout", False, "TIMEOUT", str(exc))
            return
        except ArgumentError as exc:  # checked at submit; only a dictionary change in between gets here
            self._stage(record, "sent", False, exc.code.name, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - the link thread must survive a failing send
            self._stage(record, "sent", False, "GROUND_ERROR", f"{type(exc).__name__}: {exc}")
            return
        self._command_update(record, cmd_id=str(result.cmd_id), attempts=result.attempts, outcome=result.outcome)
        if self._recorder is not None:
            try:
                self._recorder.record_command(result, f"web {record['source']}")
            except Exception as exc:  # noqa: BLE001 - the command went; failing to file it must not hide that
                self.link_error = f"archive: command not recorded: {exc}"

    # --- snapshots -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        client = self.client
        now_ms = monotonic_ms()
        lags = self.lag.window(now_ms - LAG_WINDOW_MS)
        p99 = weighted_percentile([s.lag_ms for s in lags], [s.points for s in lags], 99) if lags else None
        age = None if self.last_packet_mono_s is None else now_ms / 1000.0 - self.last_packet_mono_s
        agent_hash = client.agent_dict_hash if client else None
        return json_safe({
            "kind": "status",
            "link": self.link if isinstance(self.link, str) else type(self.link).__name__,
            "connected": self.connected,
            "link_error": self.link_error,
            "packets": self.packets,
            "last_packet_age_s": age,
            "bad_packets": client.bad_packets if client else 0,
            "gaps_missing": client.gaps.missing if client else 0,
            "agent_restarts": client.agent_restarts if client else 0,
            "dict_hash": self.dictionary.version_hash,
            "agent_dict_hash": agent_hash,
            "dict_match": None if agent_hash is None else agent_hash == self.dictionary.version_hash,
            "push_lag_p99_ms": p99,
            "pages": len(self._clients),
            "commands_queued": self._jobs.qsize(),
            "internal_errors": self.internal_errors,
        })

    def dropped_points_total(self) -> int:
        """Points dropped so far for the pages connected now (slow pages)."""
        return sum(q.dropped_points_total for q in self._clients)

    def snapshot(self) -> dict[str, Any]:
        """Everything a page needs when it (re)connects."""
        with self._state_lock:
            latest = {name: [value, t] for name, (value, t) in self._latest.items()}
            events = list(self._events)[-200:]
            commands = [json_safe(c) for c in list(self._commands.values())[-50:]]
        with self._alarm_lock:
            alarms = [self._alarm_json(a) for a in self.alarms.alarms.values()]
        return {
            "kind": "hello",
            "dict_hash": self.dictionary.version_hash,
            "stale_s": self.stale_s,
            "batch_interval_ms": self.batch_interval_s * 1000.0,
            "latest": json_safe(latest),
            "events": events,
            "alarms": alarms,
            "commands": commands,
            "status": self.status(),
        }

    def dictionary_json(self) -> dict[str, Any]:
        """The dictionary, with each channel's limits as the alarms apply them (operator overrides in)."""
        body = self.dictionary.to_json()
        with self._alarm_lock:
            for ch in body["channels"]:
                limits = self.alarms.limits(ch["name"]).to_json()
                if limits:
                    ch["limits"] = limits
                else:
                    ch.pop("limits", None)
        return body

    # --- the web thread ------------------------------------------------------------------

    def _web_main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
            self._start_error = exc
            self._started.set()
            loop.close()
            return
        self._loop = loop  # only a loop that will run: stop() hands it the shutdown
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[_no_cache])
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/api/dictionary", self._api_dictionary)
        app.router.add_get("/api/state", self._api_state)
        app.router.add_post("/api/command", self._api_command)
        app.router.add_post("/api/alarms/ack", self._api_ack)
        app.router.add_get("/api/archive", self._api_archive)
        app.router.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
        return app

    async def _startup(self) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise OSError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}; "
                          f"choose another port with --port") from exc
        host, port = self._runner.addresses[0][:2]
        self.port = port
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
        self.url = f"http://{shown}:{port}/"
        self._status_future = asyncio.get_running_loop().create_task(self._status_task())

    async def _shutdown(self) -> None:
        if self._status_future is not None:
            self._status_future.cancel()
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server stopping")
        if self._runner is not None:
            await self._runner.cleanup()

    async def _status_task(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(STATUS_PERIOD_S)
            message = self.status()
            for client_queue in self._clients:
                client_queue.put_control(message)

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def _api_dictionary(self, request: web.Request) -> web.Response:
        return _json(self.dictionary_json())

    async def _api_state(self, request: web.Request) -> web.Response:
        return _json(self.snapshot())

    async def _api_command(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        name, args = body.get("name"), body.get("args") or {}
        if not isinstance(name, str) or not isinstance(args, dict):
            return _error(400, 'expected {"name": COMMAND, "args": {...}, "confirm": bool}')
        try:
            record = self.submit_command(name, args, confirm=body.get("confirm") is True,
                                         source=request.remote or "web")
        except ArgumentError as exc:
            return _error(400, str(exc), code=exc.code.name)
        except PermissionError as exc:
            return _error(400, str(exc), code="NOT_CONFIRMED")
        return _json(record, status=202)

    async def _api_ack(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        channel = body.get("channel")
        if not isinstance(channel, str):
            return _error(400, 'expected {"channel": NAME}')
        who = f"web {body.get('who') or request.remote or ''}".strip()
        try:
            with self._alarm_lock:
                alarm = self.alarms.acknowledge(channel, who=who)
                out = self._alarm_json(alarm)
        except KeyError as exc:
            return _error(404, str(exc.args[0]) if exc.args else f"no active alarm on {channel}")
        if self.record and self._archive is not None:
            archive = self._archive
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._archive_pool, lambda: archive.record_ack(channel, who, time.time(), alarm.state, alarm.value))
            except Exception as exc:  # noqa: BLE001 - acknowledged all the same; the page says it was not filed
                out["archive_error"] = f"{type(exc).__name__}: {exc}"
        return _json(out)

    async def _api_archive(self, request: web.Request) -> web.Response:
        channels = [c for value in request.query.getall("channel", []) for c in value.split(",") if c]
        try:
            from_s = parse_time_s(request.query.get("from", ""))
            to_s = parse_time_s(request.query.get("to", ""))
        except ValueError as exc:
            return _error(400, str(exc))
        unknown = [c for c in channels if c not in self.dictionary.channel_by_name]
        if not channels or unknown:
            return _error(400, f"unknown channel {', '.join(unknown)}" if unknown
                          else "name at least one channel: ?channel=NAME&from=T&to=T")
        if to_s <= from_s:
            return _error(400, f"'to' ({to_s}) must be after 'from' ({from_s})")
        try:
            from ground.archive import Archive
        except ImportError as exc:
            return _error(501, f"no archive in this installation (ground.archive cannot be imported: {exc})",
                          code="NO_ARCHIVE")
        if self.archive_path is None:
            return _error(501, "this console has no archive: start it with --archive PATH", code="NO_ARCHIVE")
        if self._archive is None and not self.archive_path.exists():
            return _error(404, f"no archive at {self.archive_path} yet (a console writes one with --record)",
                          code="NO_ARCHIVE")

        def query() -> dict[str, Any]:
            # One thread for every archive call: a SQLite connection may be used only where it was made.
            if self._archive is None:
                self._archive = Archive(self.archive_path)
            return self._archive.query(channels, from_s, to_s)

        try:
            found = await asyncio.get_running_loop().run_in_executor(self._archive_pool, query)
        except Exception as exc:  # noqa: BLE001 - the archive's own errors go to the page as they are
            return _error(500, f"archive query failed: {type(exc).__name__}: {exc}", code="ARCHIVE_ERROR")
        out = {name: {"times": json_safe(times), "values": json_safe(values)} for name, (times, values) in found.items()}
        return _json({"from_s": from_s, "to_s": to_s, "channels": out})

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if not _same_origin(request):
            return _error(403, "WebSocket from another origin refused")
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=1 << 20, compress=False)
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        client_queue = ClientQueue(lambda: loop.call_soon_threadsafe(ready.set), self.queue_points)
        page = object()  # the lag tracker's key for this page's batches
        with self._clients_lock:
            self._clients = (*self._clients, client_queue)
        self._sockets.add(ws)
        try:
            await ws.send_str(json.dumps({"type": "batch", "seq": 0, "hk": [], "control": [self.snapshot()],
                                          "dropped": {}}, allow_nan=False))
            sender = asyncio.create_task(self._sender(ws, client_queue, ready, page))
            try:
                async for msg in ws:
                    if msg.type == WSMsgType.TEXT:
                        self._page_message(msg.data, page)
                    elif msg.type == WSMsgType.ERROR:
                        break
            finally:
                sender.cancel()
        finally:
            with self._clients_lock:
                self._clients = tuple(q for q in self._clients if q is not client_queue)
            self._sockets.discard(ws)
        return ws

    async def _sender(self, ws: web.WebSocketResponse, client_queue: ClientQueue, ready: asyncio.Event,
                      page: object) -> None:
        loop = asyncio.get_running_loop()
        seq = 0
        last_s = -math.inf
        while not ws.closed:
            await ready.wait()
            ready.clear()
            delay = last_s + self.batch_interval_s - loop.time()
            if delay > 0:  # coalesce: at most one push per interval, whatever the packet rate
                await asyncio.sleep(delay)
            batch = client_queue.take()
            if batch.empty:
                continue
            seq += 1
            message = batch_message(batch, seq, client_queue)
            try:
                text = json.dumps(message, separators=(",", ":"), allow_nan=False)
            except ValueError:  # a NaN that escaped json_safe: the push must still be valid JSON
                text = json.dumps(json_safe(message), separators=(",", ":"), allow_nan=False)
            self.lag.sent((page, seq), monotonic_ms(), batch.samples)
            try:
                await ws.send_str(text)  # waits while the page's socket is full; the queue drops meanwhile
            except (ConnectionError, RuntimeError):
                break
            last_s = loop.time()

    def _page_message(self, data: str, page: object) -> None:
        try:
            msg = json.loads(data)
        except ValueError:
            return
        if not isinstance(msg, dict) or msg.get("type") != "drawn":
            return
        at_ms = monotonic_ms()
        try:
            draw_ms, echo_ms = float(msg["draw"]), float(msg["echo"])
            origin = float(msg["origin"]) if msg.get("origin") is not None else None
            raf_ms = float(msg["raf"]) if msg.get("raf") is not None else None
            for seq, recv_ms in msg["items"]:
                self.lag.drawn((page, int(seq)), float(recv_ms), draw_ms, echo_ms, at_ms, origin,
                               self.wall_minus_mono_ms, raf_ms)
        except (KeyError, TypeError, ValueError):
            return


@web.middleware
async def _no_cache(request: web.Request, handler: Callable) -> web.StreamResponse:
    response = await handler(request)
    response.headers["Cache-Control"] = "no-cache"
    return response


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(json_safe(body), allow_nan=False), status=status,
                        content_type="application/json")


def _error(status: int, message: str, code: str = "") -> web.Response:
    body = {"error": message}
    if code:
        body["code"] = code
    return _json(body, status)


def _same_origin(request: web.Request) -> bool:
    """A browser names the page's origin; a tool (curl, a test) sends none and is let through."""
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The POST body as a JSON object; refuses other sites' pages and non-JSON bodies.

    Requiring ``application/json`` makes a cross-site form post impossible without a CORS
    preflight, which this server never grants.
    """
    if not _same_origin(request):
        raise web.HTTPForbidden(text=json.dumps({"error": "request from another origin refused"}),
                                content_type="application/json")
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text=json.dumps({"error": "send application/json"}),
                                           content_type="application/json")
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "body must be a JSON object"}),
                                 content_type="application/json")
    return body


def parse_time_s(text: str) -> float:
    """A time as UTC seconds: a number (Unix seconds) or ISO 8601 (UTC when no offset is given).

    >>> parse_time_s("1700000000.5")
    1700000000.5
    >>> parse_time_s("2024-01-01T00:00:00")
    1704067200.0
    """
    text = text.strip()
    if not text:
        raise ValueError("give both 'from' and 'to' (Unix seconds or ISO 8601, UTC)")
    try:
        value = float(text)
    except ValueError:
        try:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{text!r} is neither Unix seconds nor an ISO 8601 time") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=timezone.utc)
        return stamp.timestamp()
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite time")
    return value


def serve(
    link_url: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    archive_path: str | Path | None = None,
    record: bool = False,
    limits_path: str | Path | None = None,
) -> int:
    """Run the web console until Ctrl-C or SIGTERM; return an exit code for the CLI.

    ``archive_path`` serves the archive view from that file; ``record`` also writes everything
    this console receives (and the commands it sends) into it.
    """
    try:
        console = WebConsole(link_url, host, port, archive_path, record=record, limits_path=limits_path).start()
    except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: ground.archive.ArchiveError
        print(f"sunlit-ground serve: {exc}", file=sys.stderr)
        return 2
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"sunlit-ground serve: warning: listening on {host} with no login; anyone who reaches this port "
              "can command the spacecraft", file=sys.stderr)
    print(f"sunlit-ground serve: {console.url} (link {link_url}); Ctrl-C stops", flush=True)
    done = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        console.stop()
    return 0
