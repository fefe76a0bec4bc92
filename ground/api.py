"""The ground server's Python client: what the CLI, the console and procedures use.

- :class:`ApiClient`: the HTTP API (docs/ground-api.md) with a session token
  (``Authorization: Bearer``), errors as :class:`ServerError` carrying the server's message;
- :class:`ServerLink`: the WebSocket in *raw* mode as a :class:`~flight.link.interface.GroundLink`:
  the packets exactly as the server received them, so :class:`ServerClient` decodes them with
  the same codec and keeps its own gap and restart checks, and the queue's news on commands;
- :class:`ServerClient`: a :class:`~ground.client.GroundClient` whose commands go through the
  server's queue (who sent it, approvals, the archive's history) instead of onto a link.

Tokens: ``sunlit-ground login`` keeps one per server in :func:`ground.auth.default_token_path`
(mode 600); ``SUNLIT_GROUND_TOKEN`` overrides it (automation), and a refusal of its session says so.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any, Callable

from flight.link.definitions import DICTIONARY
from flight.link.dictionary import Dictionary, FailureCode
from flight.link.interface import GroundLink
from flight.link.messages import Stage, Verification, ack_flags_for, ack_stages
from ground.auth import default_token_path
from ground.client import CommandOutcomeUnknown, CommandResult, CommandTimeout, GroundClient

DEFAULT_SERVER = "http://127.0.0.1:8080"
TOKEN_ENV = "SUNLIT_GROUND_TOKEN"
KEEP_COMMANDS = 1000


class ServerError(RuntimeError):
    """The server refused or could not be reached; ``status`` 0 when it could not be reached. ``maybe_taken``: the
    request went out and its answer was lost (a timeout, a connection cut mid-answer), so the server may have
    acted on it."""

    def __init__(self, message: str, status: int = 0, code: str = "", maybe_taken: bool = False):
        super().__init__(message)
        self.status = status
        self.code = code
        self.maybe_taken = maybe_taken


class CommandLost(ServerError):
    """The connection to the server ended after it queued a command (``entry_id``) and before the command's
    outcome came: it may have gone to the agent, or may still go (a dropped WebSocket, not a stopped server),
    so its outcome is unknown (the CLI's exit 6), never "no server" (exit 2: found in audit, the operator sent
    it again)."""

    def __init__(self, message: str, entry_id: int | None):
        super().__init__(message)
        self.entry_id = entry_id  # None: its answer was lost, so which entry is not known


def _base(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - a port that is not a number, or out of range, raises here
    except ValueError as exc:
        raise ServerError(f"server URL {url!r}: {exc}; give http://HOST:PORT") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ServerError(f"server URL {url!r}: give http://HOST:PORT")
    return f"{parts.scheme}://{parts.netloc}"


# --- tokens ----------------------------------------------------------------------------------


def _session_refused(message: str, status: int, token: str | None) -> str:
    """The server's refusal of a session, with where the session came from when that is what an operator must
    change: one from :data:`TOKEN_ENV` overrides the token file, so `sunlit-ground login` alone does not end
    the refusal (found in audit: "log in first", a login, and the same refusal again)."""
    if status == 401 and token and os.environ.get(TOKEN_ENV) == token:
        return (f"{message} (the session is ${TOKEN_ENV}'s, which overrides `sunlit-ground login`: set it to a "
                "new session's token, or unset it)")
    return message


def load_token(server: str, path: Path | None = None) -> str | None:
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    path = path or default_token_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        token = data["servers"][_base(server)]["token"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return token if isinstance(token, str) else None


def save_token(server: str, user: str, token: str, path: Path | None = None) -> Path:
    """Keep the token for ``server`` (atomic write, mode 600)."""
    from flight.storage import write_atomic

    path = path or default_token_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("servers"), dict):
            data = {"servers": {}}
    except (OSError, ValueError):
        data = {"servers": {}}
    if token:
        data["servers"][_base(server)] = {"user": user, "token": token, "saved_s": time.time()}
    else:
        data["servers"].pop(_base(server), None)
    try:
        write_atomic(path, json.dumps(data, indent=1).encode())
    except OSError as exc:
        raise ServerError(f"{path}: the session token cannot be kept there: {exc.strerror or exc}") from None
    return path


# --- HTTP ------------------------------------------------------------------------------------


class ApiClient:
    def __init__(self, server: str = DEFAULT_SERVER, token: str | None = None, timeout_s: float = 15.0):
        self.server = _base(server)
        self.token = token
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 query: dict[str, Any] | None = None) -> Any:
        url = self.server + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None}, doseq=True)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            if not self.token.isprintable() or " " in self.token:
                where = f"{TOKEN_ENV} (it overrides the token file): set it right or unset it" if os.environ.get(
                    TOKEN_ENV) else "the token file: log in again (sunlit-ground login)"
                raise ServerError(f"the session token is not one the server gave; from {where}")
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read() or b"{}")
            except (ValueError, OSError, http.client.HTTPException):  # found in audit: a refusal cut off mid-body
                answer = {}  # was an IncompleteRead's traceback; its status still says what it was
            message = answer.get("error") if isinstance(answer, dict) else None
            raise ServerError(_session_refused(message or f"HTTP {exc.code} from {url}", exc.code, self.token),
                              exc.code, answer.get("code", "") if isinstance(answer, dict) else "") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, (TimeoutError, ConnectionResetError, BrokenPipeError)):  # it went; no answer came
                raise ServerError(f"the ground server at {self.server} took the request and its answer was lost: "
                                  f"{reason or type(reason).__name__}", maybe_taken=True) from None
            raise ServerError(f"cannot reach the ground server at {self.server}: {reason} "
                              "(is `sunlit-ground server` running? --server URL)") from None
        except ValueError as exc:  # the URL or a header that http.client refuses (never echoed: a header holds the token)
            raise ServerError(f"{url}: the request could not be made ({type(exc).__name__})") from None
        except http.client.HTTPException as exc:  # not HTTP (a banner port), or cut off mid-answer (an audit)
            raise ServerError(f"{self.server} did not answer as a Sunlit ground server does ({type(exc).__name__}); "
                              "is the --server URL right, and is the server still running?",
                              maybe_taken=isinstance(exc, (http.client.RemoteDisconnected,
                                                           http.client.IncompleteRead))) from None
        # A success that is not a Sunlit answer: a request that changes something may have been done (found in
        # review: a command so answered was said as not sent)
        taken = method != "GET"
        try:
            answer = json.loads(raw or b"{}")
        except ValueError:
            raise ServerError(f"{url}: the answer is not JSON; is {self.server} a Sunlit ground server?",
                              maybe_taken=taken) from None
        if not isinstance(answer, dict):  # every route answers an object (found in audit: `[]` was a traceback)
            raise ServerError(f"{url}: the answer is not a JSON object; is {self.server} a Sunlit ground server?",
                              maybe_taken=taken)
        return answer

    def get(self, path: str, **query: Any) -> Any:
        return self._request("GET", path, query=query)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._request("POST", path, body=body or {})

    def _unlike(self, path: str, field: str, then: str = "") -> ServerError:
        """An answer without what a Sunlit server puts in it (another JSON service on the URL): said naming the
        field, never a KeyError's traceback (found in audit)."""
        return ServerError(f"{self.server}{path}: the answer has no {field}; is {self.server} a Sunlit ground "
                           f"server? (--server URL){then}")

    def login(self, user: str, password: str) -> dict[str, Any]:
        """The server's answer: ``user``, ``role`` and ``token`` (kept for this client's requests), each checked."""
        answer = self.post("/api/login", {"user": user, "password": password})
        for field in ("token", "user", "role"):
            if not isinstance(answer.get(field), str) or not answer[field]:
                raise self._unlike("/api/login", field)
        self.token = answer["token"]
        return answer

    def default_spacecraft(self) -> str:
        listed = self.get("/api/spacecraft").get("spacecraft")
        if not isinstance(listed, list) or not all(isinstance(sc, dict) and isinstance(sc.get("spacecraft"), str)
                                                   for sc in listed):
            raise self._unlike("/api/spacecraft", "spacecraft list")
        crafts = [sc["spacecraft"] for sc in listed]
        if len(crafts) != 1:
            raise ServerError(f"this server has {len(crafts)} spacecraft ({', '.join(crafts)}): name one with --spacecraft")
        return crafts[0]

    def ws_url(self, spacecraft: str | None, raw: bool = True) -> str:
        scheme = "wss" if self.server.startswith("https") else "ws"
        query = urllib.parse.urlencode({k: v for k, v in (("spacecraft", spacecraft), ("raw", "1" if raw else None))
                                        if v})
        return f"{scheme}://{self.server.split('://', 1)[1]}/ws" + (f"?{query}" if query else "")


# --- the WebSocket as a link -----------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class ServerLink(GroundLink):
    """The server's WebSocket (raw mode) as a ground link. A reader thread takes the messages;
    a pipe wakes the client's poller, so waiting costs no sleep loop."""

    def __init__(self, api: ApiClient, spacecraft: str | None = None, open_timeout_s: float = 10.0):
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        self.api = api
        self.spacecraft = spacecraft
        self._packets: deque[tuple[bytes, bool]] = deque(maxlen=100_000)
        self.commands: OrderedDict[int, dict[str, Any]] = OrderedDict()  # queue entry id -> its latest state
        self.hello: dict[str, Any] = {}
        self.status: dict[str, Any] = {}
        self.dropped = 0
        self.closed_reason = ""
        self.stream_packets = 0
        self.listeners: list[Callable[[dict[str, Any]], None]] = []  # every control message, in the reader thread
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)  # a full pipe already wakes the poller: never wait on it
        headers = {"Authorization": f"Bearer {api.token}"} if api.token else {}
        self._stack = contextlib.ExitStack()
        try:
            # Entered as a context manager (websockets >= 17 asks for that); left in close().
            self._ws = self._stack.enter_context(connect(api.ws_url(spacecraft), additional_headers=headers,
                                                         open_timeout=open_timeout_s, max_size=1 << 24,
                                                         compression=None))
        except InvalidStatus as exc:
            status = exc.response.status_code
            try:
                answer = json.loads(exc.response.body or b"{}")
            except ValueError:
                answer = {}
            # found in audit: a refusal whose body is JSON but not an object ended in an AttributeError's traceback
            message = answer.get("error") if isinstance(answer, dict) else None
            message = message if isinstance(message, str) else ""
            os.close(self._rfd)
            os.close(self._wfd)
            raise ServerError(_session_refused(message or f"WebSocket refused (HTTP {status})", status, api.token),
                              status) from None
        except (OSError, WebSocketException, TimeoutError) as exc:
            os.close(self._rfd)
            os.close(self._wfd)
            raise ServerError(f"cannot open the ground server's WebSocket at {api.server}: {exc}") from None
        self._thread = threading.Thread(target=self._read, name="sunlit-server-link", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for text in self._ws:
                try:
                    message = json.loads(text)
                except ValueError:
                    continue
                if isinstance(message, dict):  # found in audit: `[]` (another service) ended the reader: "closed"
                    self._take(message)
        except Exception as exc:  # noqa: BLE001 - the connection ended; the client sees closed_reason
            self.closed_reason = f"{type(exc).__name__}: {exc}"
        finally:
            if not self.closed_reason:
                self.closed_reason = "the server closed the connection"
            with self._changed:
                self._changed.notify_all()
            self._wake()

    def _take(self, message: dict[str, Any]) -> None:
        # Each part as a Sunlit server sends it, or none (found in audit: `"raw": 5`, `"dropped": 5` or a control
        # item not an object ended the reader thread, and the client took the connection for closed)
        raw, control = message.get("raw"), message.get("control")
        raw = [row for row in raw if isinstance(row, list)] if isinstance(raw, list) else []
        control = [item for item in control if isinstance(item, dict)] if isinstance(control, list) else []
        dropped = message.get("dropped")
        dropped = dropped.get("points", 0) if isinstance(dropped, dict) else 0
        with self._changed:
            self.dropped += dropped if isinstance(dropped, int) else 0
            for row in raw:
                try:
                    packet = bytes.fromhex(row[2])
                except (TypeError, ValueError, IndexError):
                    continue
                if len(self._packets) == self._packets.maxlen:  # a program that stopped reading: the oldest go,
                    self.dropped += 1  # counted as the server's own drops are (an audit: silently)
                self._packets.append((packet, True))
            for item in control:
                kind = item.get("kind")
                if kind == "command":
                    entry = item.get("command")
                    # kept only with what ServerClient.send reads of it (found in audit: one without its state
                    # ended send in a KeyError's traceback)
                    if isinstance(entry, dict) and _is_int(entry.get("id")) and isinstance(entry.get("state"), str):
                        self.commands[entry["id"]] = entry
                        self.commands.move_to_end(entry["id"])
                        while len(self.commands) > KEEP_COMMANDS:
                            self.commands.popitem(last=False)
                elif kind == "hello":
                    self.hello = item
                elif kind == "status":
                    self.status = item
            self._changed.notify_all()
        for item in control:
            for listener in self.listeners:
                listener(item)
        if raw or control:
            self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wfd, b"x")
        except (BlockingIOError, OSError):
            pass

    def wait_command(self, entry_id: int, predicate: Callable[[dict[str, Any]], bool], timeout_s: float
                     ) -> dict[str, Any] | None:
        """The entry once ``predicate`` holds (None on timeout or a closed connection)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                entry = self.commands.get(entry_id)
                if entry is not None and predicate(entry):
                    return entry
                left = deadline - time.monotonic()
                if left <= 0 or self.closed_reason:
                    return entry if entry is not None and predicate(entry) else None
                self._changed.wait(min(left, 0.5))

    # --- GroundLink -----------------------------------------------------------------------

    def pollables(self) -> list[Any]:
        return [self._rfd]

    def send(self, packet: bytes) -> bool:
        raise ServerError("through the server, commands go to its queue (ServerClient.send), not onto a link")

    def receive(self) -> list[bytes]:
        return [raw for raw, _ in self.receive_tagged()]

    def receive_tagged(self) -> list[tuple[bytes, bool]]:
        self.flush()
        with self._lock:
            out = list(self._packets)
            self._packets.clear()
        self.stream_packets += len(out)
        return out

    def reset_commands(self) -> None:
        pass

    def flush(self) -> None:
        try:
            while os.read(self._rfd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        try:
            self._stack.close()
        except Exception:  # noqa: BLE001 - closing what may already be gone
            pass
        self._thread.join(5.0)
        for fd in (self._rfd, self._wfd):
            try:
                os.close(fd)
            except OSError:
                pass


# --- the client --------------------------------------------------------------------------------


_PUS_STAGES = {s.value: s for s in Stage}


class ServerClient(GroundClient):
    """A GroundClient on the server: telemetry from its WebSocket, commands through its queue."""

    def __init__(self, api: ApiClient, spacecraft: str | None = None, dictionary: Dictionary = DICTIONARY):
        self.api = api
        self.spacecraft = spacecraft or api.default_spacecraft()
        self.server_link = ServerLink(api, self.spacecraft)
        super().__init__(self.server_link, dictionary)

    def lost_reason(self) -> str:
        """Why the server's WebSocket ended ("" while it stands): nothing more comes on it."""
        return self.server_link.closed_reason

    def connect(self, timeout_s: float = 10.0, interval_s: float = 0.2) -> None:
        """Wait for the server's greeting (the server, not this client, talks to the agent)."""
        deadline = time.monotonic() + timeout_s
        while not self.server_link.hello and time.monotonic() < deadline:
            if self.server_link.closed_reason:
                raise ServerError(f"the server's WebSocket closed: {self.server_link.closed_reason}")
            self.poll(min(0.2, deadline - time.monotonic()))
        if not self.server_link.hello:
            raise TimeoutError(f"no greeting from the ground server within {timeout_s} s")
        # What the server knew before this client came: last values (with their packet times)
        # and the agent's parameters, so views start full and stale ones can say so.
        state = self._greeting("latest", "parameters")
        for name, snap in state["latest"].items():
            if name in self.dictionary.channel_by_name and name not in self.latest:
                where = f"greeting's states.{self.spacecraft}.latest.{name}"
                if not isinstance(snap, dict):  # found in audit: an AttributeError's traceback
                    raise self.api._unlike("/ws", where)
                at = snap.get("time_s")
                if not isinstance(at, (int, float)) or isinstance(at, bool):
                    raise self.api._unlike("/ws", f"{where}.time_s")
                self.latest[name] = (snap.get("value"), at)
        self.parameters.update(state["parameters"])

    def _greeting(self, *parts: str) -> dict[str, Any]:
        """The greeting's state of this spacecraft, each of ``parts`` in it an object (``{}`` where it has none):
        one not as a Sunlit server sends it is said naming it, never an AttributeError's traceback (found in
        audit)."""
        states = self.server_link.hello.get("states") or {}
        if not isinstance(states, dict):
            raise self.api._unlike("/ws", "greeting's states")
        state = states.get(self.spacecraft) or {}
        if not isinstance(state, dict):
            raise self.api._unlike("/ws", f"greeting's states.{self.spacecraft}")
        state = dict(state)
        for part in parts:
            state[part] = state.get(part) or {}
            if not isinstance(state[part], dict):
                raise self.api._unlike("/ws", f"greeting's states.{self.spacecraft}.{part}")
        return state

    def dictionary_matches(self, timeout_s: float = 3.0) -> bool | None:
        agent_hash = self._greeting("status")["status"].get("agent_dict_hash") or self.agent_dict_hash
        if agent_hash is None:
            return super().dictionary_matches(timeout_s)
        self.agent_dict_hash = agent_hash
        return agent_hash == self.dictionary.version_hash

    def submit_entry(self, name: str, args: dict[str, Any], ack_flags: int | None = None) -> dict[str, Any]:
        """Queue a command on the server (already confirmed by the caller); the queue entry.
        ``ack_flags``: the success reports to ask the agent for (None: the server's default)."""
        body: dict[str, Any] = {"spacecraft": self.spacecraft, "name": name, "args": args, "confirm": True}
        if ack_flags is not None:
            body["acks"] = [stage.value for stage in ack_stages(ack_flags)]
        try:
            entry = self.api.post("/api/commands", body)
        except ServerError as exc:
            if not exc.maybe_taken:
                raise
            # Found in review: the answer lost after the server read the command was "no server" (exit 2), and the
            # operator would send it again while it may be queued
            raise CommandLost(f"{name}: outcome unknown: {exc}; the server may have queued it: check `sunlit-ground "
                              "queue` (or the archive's command history) before sending it again", None) from None
        for field, ok in (("id", _is_int), ("state", lambda v: isinstance(v, str))):
            if not ok(entry.get(field)):  # found in audit: a KeyError's traceback once the server had taken it
                raise CommandLost(f"{name}: outcome unknown: {self.api._unlike('/api/commands', field)}; the server "
                                  "may have queued it: check `sunlit-ground queue` (or the archive's command "
                                  "history) before sending it again", None)
        return entry

    def set_limits(self, channel: str, bounds: dict[str, float | None]) -> dict[str, Any]:
        """Change a channel's limits on the server (its alarms, every page and operator; kept across
        restarts); ``bounds``: warn_low, warn_high, crit_low, crit_high, None for none. The limits it applies."""
        answer = self.api.post("/api/limits", {"spacecraft": self.spacecraft, "channel": channel, "limits": bounds})
        if not isinstance(answer.get("limits"), dict):  # found in audit: a KeyError, said "limits CH: limits"
            unread = self.api._unlike("/api/limits", "limits", "; the server may have applied them")
            unread.maybe_taken = True  # it took the request: never said "not changed"
            raise unread
        return answer["limits"]

    def server_limits(self) -> dict[str, dict[str, Any]]:
        """Each channel's limits as the server applies them now (its overrides, the agent's parameters)."""
        channels = self.api.get("/api/dictionary", spacecraft=self.spacecraft).get("channels", [])
        if not isinstance(channels, list):  # found in audit: a TypeError's traceback
            raise self.api._unlike("/api/dictionary", "channels")
        return {ch["name"]: ch.get("limits") or {} for ch in channels
                if isinstance(ch, dict) and isinstance(ch.get("name"), str)}

    def send(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        wait: str = "completed",
        timeout_s: float | None = None,
        retries: int = 3,
        attempt_timeout_s: float = 1.0,
        on_report: Callable[[Verification], None] | None = None,
        cmd_id: int | None = None,
        on_entry: Callable[[dict[str, Any]], None] | None = None,
        ack_flags: int | None = None,
        withdraw_unapproved: bool = False,
    ) -> CommandResult:
        """As :meth:`GroundClient.send`, through the server's queue: the server retries, checks
        time windows and files the command under this session's user. A command the queue
        ends on the ground (rejected, cancelled, not sent) comes back with ``refused`` set; one
        that waits for a second operator's approval waits here too, up to ``timeout_s``, then stays
        queued for it, or, with ``withdraw_unapproved`` (a procedure, which has given up on it), is
        cancelled: never sent out of its sequence by a later approval. One the
        agent acknowledged whose outcome did not come (the queue's ``unknown``, or this wait
        over) raises :class:`CommandOutcomeUnknown`; the server goes on following it. The connection lost once the
        server took it raises :class:`CommandLost` (a :class:`ServerError`)."""
        if wait not in ("sent", "accepted", "completed"):
            raise ValueError(f"wait must be sent, accepted or completed, not {wait!r}")
        command = self.dictionary.command(name)
        values = command.validate_args(args or {})
        entry = self.submit_entry(command.name, values, ack_flags)
        result = CommandResult(command.name, values, 0, command.opcode, sent_at_s=time.time())
        entry_id = entry["id"]
        shown = 0
        seen_states: set[str] = set()
        timeout_s = self.command_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        target = {"sent": ("sent", "accepted", "started", "completed"), "accepted": ("accepted", "started", "completed"),
                  "completed": ("completed",)}[wait]
        while True:
            entry = self.server_link.commands.get(entry_id, entry)
            if entry["state"] not in seen_states:
                seen_states.add(entry["state"])
                if on_entry is not None:
                    on_entry(entry)
            self._fill(result, entry)
            if on_report is not None:
                for report in result.reports[shown:]:
                    on_report(report)
                shown = len(result.reports)
            if entry["state"] == "timeout":
                result.gave_up = True
                raise CommandTimeout(f"{command.name}: {entry.get('outcome') or 'timed out'} (server queue, entry "
                                     f"{entry_id})", result)
            if entry["state"] == "unresolved":  # final, and no outcome: never "done" (found in audit)
                result.gave_up = True
                raise CommandOutcomeUnknown(f"{command.name}: outcome unknown: the server stopped following it with "
                                            f"no outcome (server queue entry {entry_id}, unresolved); the agent may "
                                            "have run it: check before sending it again", result)
            if entry.get("final") or entry["state"] in target:
                return result
            left = deadline - time.monotonic()
            if entry["state"] == "unknown" or left <= 0:
                result.gave_up = True
                if result.acknowledged:  # the server keeps listening, and settles the entry when the report comes
                    raise CommandOutcomeUnknown(
                        f"{command.name}: outcome unknown: the agent acknowledged it and no {wait} report came "
                        f"(server queue entry {entry_id}, {entry['state']}); the server keeps listening for it "
                        "and asks the agent again at the next contact", result)
                if entry["state"] in ("sent", "unknown") or entry.get("attempts"):
                    # On the link: the agent may have it and its reports be lost on the way down. "Never
                    # ran" here would have an operator send it again, and a second cmd_id runs it twice.
                    raise CommandOutcomeUnknown(
                        f"{command.name}: outcome unknown: the server sent it and no report came within "
                        f"{timeout_s} s (server queue entry {entry_id}, {entry['state']}); the agent may have "
                        "run it: check before sending it again (sunlit-ground queue)", result)
                if entry["state"] in ("queued", "released"):
                    # Still to go out: left there, it would be sent later, after a timeout that says it never ran.
                    entry = self.take_back(entry_id, entry)
                    if entry.get("final") and entry["state"] not in ("cancelled", "timeout", "unresolved"):
                        # It ended as the wait did (completed, failed): that is its outcome, not an unknown one
                        # (found in audit: a FILE_LIST completed was said "outcome unknown")
                        self._fill(result, entry)
                        return result
                    if entry["state"] != "cancelled":
                        raise CommandOutcomeUnknown(
                            f"{command.name}: outcome unknown: no {wait} within {timeout_s} s, and the server "
                            f"released it to the link as the wait ended (entry {entry_id}, {entry['state']}): "
                            "check before sending it again (sunlit-ground queue)", result)
                    raise CommandTimeout(f"{command.name}: no {wait} within {timeout_s} s; still queued (agent not "
                                         f"heard, or the queue held): cancelled, it never left the ground (entry "
                                         f"{entry_id})", result)
                if withdraw_unapproved and entry["state"] == "pending_approval":
                    entry = self.take_back(entry_id, entry)
                    if entry["state"] == "cancelled":
                        raise CommandTimeout(f"{command.name}: not approved within {timeout_s} s: withdrawn from the "
                                             f"server's queue, it never left the ground (entry {entry_id})", result)
                    if entry["state"] == "pending_approval":  # the cancel itself failed (found in review: retried
                        raise CommandTimeout(  # for ever): said, for the operators to cancel it
                            f"{command.name}: not approved within {timeout_s} s, and withdrawing it failed: it still "
                            f"waits for approval on the server (entry {entry_id}): cancel it (sunlit-ground queue)",
                            result)
                    result.gave_up = True  # approved and on its way as the wait ended
                    raise CommandOutcomeUnknown(
                        f"{command.name}: approved as the wait ended and not withdrawn ({entry['state']}, entry "
                        f"{entry_id}); the agent may run it: check before sending it again (sunlit-ground queue)",
                        result)
                raise CommandTimeout(f"{command.name}: no {wait} within {timeout_s} s; the server's queue has it "
                                     f"as {entry['state']} (entry {entry_id})", result)
            if self.server_link.closed_reason:
                result.gave_up = True
                raise CommandLost(f"{command.name}: outcome unknown: the connection to the server ended after it "
                                  f"took the command (queue entry {entry_id}, last seen {entry['state']}): "
                                  f"{self.server_link.closed_reason}; it may have gone to the agent, or still go: "
                                  "check `sunlit-ground queue` (or the archive's command history) before sending it "
                                  "again", entry_id)
            self.poll(min(left, 0.1))

    def take_back(self, entry_id: int, entry: dict[str, Any]) -> dict[str, Any]:
        """Cancel a command still queued or waiting for approval; the entry as the server then has it
        (released or sent meanwhile: not cancelled, and said so by the caller)."""
        try:
            answer = self.api.post(f"/api/commands/{entry_id}/cancel", {"spacecraft": self.spacecraft})
            if isinstance(answer.get("state"), str):  # found in audit: `{}` was a KeyError's traceback in send
                return answer
        except ServerError:
            pass
        self.poll(0.2)
        return self.server_link.commands.get(entry_id, {**entry, "state": "released"})

    @staticmethod
    def _fill(result: CommandResult, entry: dict[str, Any]) -> None:
        """The entry's PUS stages as Verification reports; a ground-side end as ``refused``."""
        # Each field as a Sunlit server sends it, or left as it was (found in audit: `"cmd_id": "x"` or a stage not
        # an object was a ValueError's or an AttributeError's traceback)
        cmd_id = entry.get("cmd_id")
        if cmd_id and (_is_int(cmd_id) or isinstance(cmd_id, str) and cmd_id.isascii() and cmd_id.isdigit()):
            result.cmd_id = int(cmd_id)  # a string from the server (64 bits: beyond a JS number)
        result.attempts = entry["attempts"] if _is_int(entry.get("attempts")) else 0
        if "acks" in entry:
            try:
                result.ack_flags = ack_flags_for(entry["acks"])  # what the command goes with
            except (TypeError, ValueError):
                pass  # a newer server's stage this client does not know: the flags stay as they were
        reports = []
        stages = entry.get("stages")
        for stage in stages if isinstance(stages, list) else []:
            if not isinstance(stage, dict) or not isinstance(stage.get("stage"), str):
                continue
            pus = _PUS_STAGES.get(stage["stage"])
            code = stage.get("code", "")
            if not stage.get("agent") or pus is None or (not stage.get("ok") and (
                    not isinstance(code, str) or code not in FailureCode.__members__)):
                continue  # the ground's own records (a window that passed) are not the agent's reports
            done = entry.get("result") if isinstance(entry.get("result"), dict) else {}
            reason = stage.get("reason", "")
            reports.append(Verification(pus, bool(stage.get("ok")), 0, result.cmd_id, result.opcode,
                                        FailureCode.NONE if stage.get("ok") else FailureCode[code],
                                        reason if isinstance(reason, str) else str(reason),
                                        done if pus is Stage.COMPLETED else {}))
        result.reports = reports
        if entry.get("final") and entry["state"] in ("rejected", "cancelled", "failed") and result.failure is None:
            result.refused = entry.get("outcome") or entry["state"]

    def close(self) -> None:
        self.server_link.close()
