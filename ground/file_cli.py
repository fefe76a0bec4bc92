"""``sunlit-ground file put|get|fetch|list|rm|status|cancel``: files to and from a spacecraft.

Through the ground server by default (after ``sunlit-ground login``): ``put`` uploads the file
to the server, which sends it by CFDP (docs/ground-api.md, "File transfer"); ``get`` has the
server send FILE_DOWNLINK through its queue, and fetches the file once it is down whole. Both
follow the transfer to its end, with its progress, and the exit code says how it ended.
``--direct LINK`` runs a CFDP entity of its own on the agent's link, for the bench: its file
area is ``--area`` (``var/ground-files/direct``), nothing goes to the server's archive.

- ``put LOCAL NAME``: LOCAL to the agent as NAME (under staging/, incoming/, data/, at most 4 GiB through the server,
  or sequences/NAME.toml: a stored sequence, at most 64 KiB, checked on board as it arrives, SEQUENCE_STORED saying
  so). Ctrl-C cancels it:
  before the whole file reached the server the upload is cut off and the server keeps none of it; once it is
  there the CLI waits for the answer naming the transfer (Ctrl-C again: stop waiting, exit 6); then the transfer
  is cancelled on the server (``--direct``: here, its EOF(cancel) sent before the CLI ends) and the CLI says what
  that left: nothing on board (exit 1), delivered before the cancel (0), or maybe in place, every byte having
  gone up, or the cancel not confirmed (6, naming the command that tells);
- ``get NAME [--out PATH]``: the agent's NAME (under products/, checkpoints/, logs/, staging/,
  incoming/ or data/) to PATH (default: its base name here; an existing file, one made while the
  file came down too, is kept unless ``--force``: exit 2), written whole beside it and renamed into
  place; the SHA-256 the agent sent is checked against what was written. Past ``--timeout``, or at Ctrl-C,
  the transfer goes on (exit 1) and the CLI names it: ``fetch ID`` writes the file once it is down (``--direct``:
  nothing takes it; Ctrl-C names the FILE_CANCEL that stops the agent sending it);
- ``fetch ID [--out PATH]``: the file a transfer brought down (``get-N``, from ``status``: this operator's or
  another's), from the server, checked and written as ``get`` writes it, without asking the board again;
- ``list [DIRECTORY]``: FILE_LIST (names, sizes, times, free space on board);
- ``rm NAME``: FILE_DELETE (hazardous: asks, or ``--yes``);
- ``status``: the transfers the server follows (``--direct``: the agent's FILE_STATUS);
- ``cancel ID``: stop one of them (its id from ``status``; the agent is told).

Exit codes: 0 done; 1 the transfer or command failed, or the transfer did not end within
``--timeout`` (it goes on; ``status`` follows it); 2 bad input, no server, not logged in; 3 a
hazardous command not confirmed (Ctrl-C at its question too); 4 a command (list, rm, status with
``--direct``) timed out: it never ran; 5 a command still waits for a second operator's approval
(it stays queued on the server); 6 a command's outcome is unknown (Ctrl-C as it is followed too), or what a put
cancelled at Ctrl-C left on board is.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import shlex
import shutil
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

from flight.files.entity import FileError
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import ArgumentError
from flight.link.messages import EventRecord
from ground.api import DEFAULT_SERVER, ApiClient, ServerClient, ServerError, load_token
from ground.cli_args import count as _count, install_output, printable as _printable, seconds as _seconds, temp_beside
from ground.client import CommandOutcomeUnknown, CommandTimeout, GroundClient, direct_client
from ground.files import AGENT_REASON_WAIT_S, MAX_UPLOAD_BYTES, SETTLED, FileRecord, GroundFiles, check_remote, \
    reason_to_come, sha256_file

EXIT_FAILED, EXIT_INPUT, EXIT_NOT_CONFIRMED, EXIT_TIMEOUT, EXIT_AWAITING_APPROVAL, EXIT_UNKNOWN = 1, 2, 3, 4, 5, 6
POLL_S = 0.5          # how often the server's list is read while following a transfer
ACK_PERIOD_S = 1.0    # --direct: the store acknowledgement that tells the agent the ground listens
DIRECT_CANCEL_S = 5.0  # --direct: Ctrl-C on a put waits at most this for its EOF(cancel) to go out


class FileCliError(Exception):
    """Said to the user on stderr with an exit code; never a traceback."""

    def __init__(self, message: str, code: int = EXIT_INPUT):
        super().__init__(message)
        self.code = code


def size_text(n: Any) -> str:
    """
    >>> size_text(None), size_text(999), size_text(1_500_000)
    ('?', '999 B', '1.5 MB')
    """
    if not isinstance(n, int):
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def progress_text(r: dict[str, Any]) -> str:
    """
    >>> progress_text({"id": "out-1", "state": "active", "progress": 512, "size": 2048, "reason": "started"})
    'out-1 active 25% (512 B of 2.0 kB) started'
    """
    size, done = r.get("size"), int(r.get("progress") or 0)
    pct = f" {100 * done // size}%" if isinstance(size, int) and size > 0 else ""
    return f"{r['id']} {r['state']}{pct} ({size_text(done)} of {size_text(size)}) {r.get('reason') or ''}".rstrip()


class _Shown:
    """Prints a transfer's progress when its state changes or it moves another tenth."""

    def __init__(self) -> None:
        self.last: tuple[str, int] | None = None

    def __call__(self, r: dict[str, Any]) -> None:
        size = r.get("size") if isinstance(r.get("size"), int) and r.get("size") else None
        tenth = 10 * int(r.get("progress") or 0) // size if size else 0
        key = (r["state"], tenth)
        if key != self.last:
            self.last = key
            print(f"  {time.strftime('%H:%M:%S', time.gmtime())} {progress_text(r)}", flush=True)


# --- the server ----------------------------------------------------------------------------


def _api(args: argparse.Namespace) -> ApiClient:
    token = load_token(args.server)
    if token is None:
        raise FileCliError(f"not logged in to {args.server}: run `sunlit-ground --server {args.server} login`")
    return ApiClient(args.server, token)


def _raw(api: ApiClient, method: str, path: str, query: dict[str, Any], data: Any = None,
         headers: dict[str, str] | None = None, opener: urllib.request.OpenerDirector | None = None) -> Any:
    """A request whose body or answer is a file: the open response (the caller reads and closes it)."""
    url = f"{api.server}{path}?{urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})}"
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Authorization": f"Bearer {api.token}", **(headers or {})})
    try:
        timeout_s = max(api.timeout_s, 600.0)
        return opener.open(request, timeout=timeout_s) if opener else urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        try:
            answer = json.loads(exc.read() or b"{}")
        except ValueError:
            answer = {}
        raise ServerError(answer.get("error") or f"HTTP {exc.code} from {url}", exc.code, answer.get("code", "")) \
            from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServerError(f"cannot reach the ground server at {api.server}: {getattr(exc, 'reason', exc)}") from None


def _listed(api: ApiClient, spacecraft: str, rid: str) -> dict[str, Any] | None:
    """Transfer ``rid`` as the server lists it now; None where it is not among the transfers it holds."""
    return next((r for r in api.get("/api/files", spacecraft=spacecraft)["transfers"] if r["id"] == rid), None)


def _follow(api: ApiClient, spacecraft: str, record: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """The record once it settles, or as it stands when ``timeout_s`` passes; progress printed."""
    show = _Shown()
    show(record)
    deadline = time.monotonic() + timeout_s
    while record["state"] not in SETTLED and time.monotonic() < deadline:
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        record = _listed(api, spacecraft, record["id"]) or record
        show(record)
    why_by = time.monotonic() + AGENT_REASON_WAIT_S  # a put the agent refused: its reason may come just after
    while reason_to_come(record) and time.monotonic() < why_by:
        time.sleep(POLL_S)
        record = _listed(api, spacecraft, record["id"]) or record
    return record


def _ended(record: dict[str, Any], timeout_s: float, how: str) -> int:
    if record["state"] == "done":
        return 0
    if record["state"] in SETTLED:
        print(f"{record['id']} {record['state']}: {record.get('reason')}", file=sys.stderr)
    else:
        print(f"{record['id']} not done within {timeout_s:g} s ({record['state']}); it goes on: {how}",
              file=sys.stderr)
    return EXIT_FAILED


class _Upload:
    """The local file as urllib reads it for the upload's body. ``committed`` once its last bytes are handed to the
    socket: from then on the server may take the whole file and queue its transfer, so Ctrl-C no longer cuts the
    upload off but waits for the answer that names the transfer, to cancel it."""

    def __init__(self, f: Any, size: int):
        self.f, self.size, self.handed, self.committed = f, size, 0, size == 0
        self.cut = False  # the server closed the connection as it came: nothing more is read, its answer is

    def read(self, n: int = -1) -> bytes:
        if self.cut:
            return b""
        data = self.f.read(n)
        self.handed += len(data)
        self.committed = self.committed or self.handed >= self.size or not data
        return data


class _AnswerFirst:
    """An upload's connection that reads the server's answer where it closed the connection while the body was
    being sent: found in audit, a server refusing a put before reading it (413 for a file over its limit, said in
    JSON) closes it, the send then fails (EPIPE, ECONNRESET), and urllib dropped the answer and said "cannot reach
    the ground server: Broken pipe"."""

    def __init__(self, *args: Any, body: _Upload, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.body = body

    def send(self, data: Any) -> None:
        if self.body.cut:
            return
        try:
            super().send(data)  # type: ignore[misc]
        except (BrokenPipeError, ConnectionResetError):
            if not self.body.handed:
                raise  # its headers did not go out: nothing the server could answer
            self.body.cut = True  # what the server said, if anything, is read next (none: "cannot reach", as before)


class _AnswerFirstHTTP(_AnswerFirst, http.client.HTTPConnection):
    pass


class _AnswerFirstHTTPS(_AnswerFirst, http.client.HTTPSConnection):
    pass


def _upload_opener(body: _Upload) -> urllib.request.OpenerDirector:
    class Plain(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(functools.partial(_AnswerFirstHTTP, body=body), req)

    class Secure(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(functools.partial(_AnswerFirstHTTPS, body=body), req, context=self._context)

    return urllib.request.build_opener(Plain(), Secure())


def _upload(api: ApiClient, spacecraft: str, local: Path, name: str, args: argparse.Namespace) \
        -> tuple[dict[str, Any] | int, bool]:
    """(the transfer the server made, whether Ctrl-C came once the whole file was with it), or (an exit code, True)
    said when Ctrl-C cut the upload off, or stopped the wait for the server's answer."""
    size = local.stat().st_size
    interrupted: list[bool] = []

    def on_sigint(signum: int, frame: Any) -> None:
        if not body.committed or interrupted:
            signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt
        interrupted.append(True)
        print(f"\ninterrupted: all of {local} is with the server; waiting for its answer to cancel the transfer it "
              "makes (Ctrl-C again: stop waiting, its outcome unknown)", file=sys.stderr, flush=True)

    with open(local, "rb") as f:
        body = _Upload(f, size)
        query = {"spacecraft": spacecraft, "name": name, "cfdp_class": args.cfdp_class, "priority": args.priority,
                 "filename": str(local)}
        # Only where Ctrl-C raises KeyboardInterrupt as Python's own handler does (not ignored, as in a job started
        # in the background, nor another's handler); signals are set in the main thread alone
        ours = threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is signal.default_int_handler
        previous = signal.signal(signal.SIGINT, on_sigint) if ours else None
        try:
            with _raw(api, "POST", "/api/files/put", query, body,
                      {"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                      _upload_opener(body)) as resp:
                return json.loads(resp.read()), bool(interrupted)
        except KeyboardInterrupt:
            if not interrupted:  # the server never had the whole file: it drops what it had (docs/ground-api.md)
                print(f"\ninterrupted: the upload of {local} was cut off ({size_text(body.handed)} of "
                      f"{size_text(size)} handed over) before the whole file reached the server, which keeps none "
                      f"of it: nothing goes to {spacecraft}", file=sys.stderr)
                return EXIT_FAILED, True
            print(f"stopped waiting: the server has all of {local} and may have queued it for {spacecraft} as "
                  f"{name}; `sunlit-ground file status` lists it ({local} -> {name}) and `sunlit-ground file "
                  "cancel ID` stops it", file=sys.stderr)
            return EXIT_UNKNOWN, True
        finally:
            if ours:
                signal.signal(signal.SIGINT, previous)


def _cancelled_text(record: dict[str, Any], name: str) -> tuple[str, int]:
    """What a put cancelled at Ctrl-C left on board, from its record as the cancel left it, and the exit code:
    1 where nothing of it is in place there, 6 where it may be (every byte had gone up, or an earlier try had)."""
    size, sent, rid = record.get("size"), int(record.get("progress") or 0), record["id"]
    look = f"`sunlit-ground file list {name.rsplit('/', 1)[0]}` shows whether it is there"
    if not record.get("started_s"):
        text, code = f"{rid} cancelled before it started: nothing of {name} went to the board", EXIT_FAILED
    elif record.get("restarts"):
        text = (f"{rid} cancelled; it had been started again {record['restarts']} time(s), and an earlier try may "
                f"have put {name} in place on board: {look}")
        code = EXIT_UNKNOWN
    elif isinstance(size, int) and sent < size:
        text = (f"{rid} cancelled with {size_text(sent)} of {size_text(size)} gone up: the agent drops what came "
                f"(told by CFDP's EOF(cancel), or on its own after its inactivity time should that be lost); {name} "
                "is not put in place on board")
        code = EXIT_FAILED
    else:
        text = (f"{rid} cancelled after every byte had gone up: the agent may have put {name} in place before the "
                f"cancel reached it; {look}")
        code = EXIT_UNKNOWN
    return text, code


def _settled_text(record: dict[str, Any], name: str) -> tuple[str, int]:
    """What a put's record says once Ctrl-C cancelled it, or it had ended first; exit code with it."""
    rid, state = record["id"], record["state"]
    if state == "cancelled":
        return _cancelled_text(record, name)
    if state == "done":
        text, code = f"{rid} was delivered before the cancel reached it: {name} is on board", 0
    elif state == "failed":
        text, code = f"{rid} had failed already: {record.get('reason')}", EXIT_FAILED
    else:
        text = f"{rid} is {state} after the cancel: `sunlit-ground file status` follows it"
        code = EXIT_UNKNOWN
    return text, code


def _cancel_put(api: ApiClient, spacecraft: str, record: dict[str, Any], name: str) -> int:
    """Ctrl-C on a put through the server: its transfer cancelled there (the agent is told), and what that left
    said as it is, never "stopped" with the transfer going on unseen."""
    rid = record["id"]
    print(f"\ninterrupted: cancelling {rid} on the server", file=sys.stderr, flush=True)
    try:
        try:
            record = api.post(f"/api/files/{rid}/cancel", {"spacecraft": spacecraft})
        except ServerError as exc:
            if exc.status != 409:  # 409: it had ended before the cancel came; how is in the list
                raise
            found = _listed(api, spacecraft, rid)
            if found is None:
                raise
            record = found
    except (ServerError, KeyboardInterrupt) as exc:
        why = "Ctrl-C again" if isinstance(exc, KeyboardInterrupt) else str(exc)
        print(f"{rid}: not known to be cancelled ({why}); it may go on: `sunlit-ground file status` shows it, "
              f"`sunlit-ground file cancel {rid}` stops it", file=sys.stderr)
        return EXIT_UNKNOWN
    text, code = _settled_text(record, name)
    print(text, file=sys.stderr if code else sys.stdout)
    return code


def _put_server(args: argparse.Namespace, local: Path, name: str) -> int:
    api = _api(args)
    spacecraft = args.spacecraft or api.default_spacecraft()
    try:
        answer, interrupted = _upload(api, spacecraft, local, name, args)
    except ServerError as exc:
        if exc.status == 413:  # a server of a smaller limit than this CLI knows: bad input, as refused here (2)
            raise FileCliError(str(exc)) from None
        raise
    if isinstance(answer, int):
        return answer
    record = answer
    try:
        print(f"{local} -> {spacecraft}:{name} as {record['id']} ({size_text(record.get('size'))})", flush=True)
        if interrupted:
            return _cancel_put(api, spacecraft, record, name)
        if args.no_wait:
            return 0
        record = _follow(api, spacecraft, record, args.timeout)
    except KeyboardInterrupt:  # the transfer it made is named: cancelled, and what that left said
        return _cancel_put(api, spacecraft, record, name)
    if record["state"] == "done":
        print(f"{name}: delivered, sha256 {record.get('sha256')}")
    return _ended(record, args.timeout, "sunlit-ground file status")


def _get_server(args: argparse.Namespace, name: str, out: Path) -> int:
    api = _api(args)
    spacecraft = args.spacecraft or api.default_spacecraft()
    record = api.post("/api/files/get", {"spacecraft": spacecraft, "name": name, "cfdp_class": args.cfdp_class,
                                         "priority": args.priority})
    rid = record["id"]
    later = f"{_fetch_again(args, rid, out)} writes it here once it is done"
    try:  # the id said inside: a Ctrl-C just after it still names the get (CI saw the generic "stopped here")
        print(f"{spacecraft}:{name} asked for as {rid} (FILE_DOWNLINK through the queue)", flush=True)
        record = _follow(api, spacecraft, record, args.timeout)
    except KeyboardInterrupt:  # it goes on, named, and how to have it (found in audit: "stopped here", no way to it)
        print(f"\ninterrupted: stopped following {rid}; it goes on, and the server keeps {name} when it comes: "
              f"{later}; {_again(args, 'file', 'cancel', rid)} stops it", file=sys.stderr)
        return EXIT_FAILED
    if record["state"] != "done":
        return _ended(record, args.timeout, f"sunlit-ground file status; the server keeps the file when it comes: "
                                            f"{later}")
    return _fetch(args, api, spacecraft, record, out)


def _again(args: argparse.Namespace, *words: str) -> str:
    """A ``sunlit-ground`` command line for the server and spacecraft this one used (an id such as ``get-1`` is
    counted per spacecraft on each server: pasted without them, it could name another operator's transfer)."""
    where = ["--server", args.server] if args.server != os.environ.get("SUNLIT_GROUND_SERVER", DEFAULT_SERVER) else []
    where += ["--spacecraft", args.spacecraft] if args.spacecraft else []
    return "`" + " ".join(shlex.quote(w) for w in ("sunlit-ground", *where, *words)) + "`"


def _fetch_again(args: argparse.Namespace, rid: str, out: Path) -> str:
    return _again(args, "file", "fetch", rid, "--out", str(out), *(["--force"] if args.force else []))


def _fetch(args: argparse.Namespace, api: ApiClient, spacecraft: str, record: dict[str, Any], out: Path) -> int:
    """The file a transfer brought down, from the server to ``out`` (checked against the agent's SHA-256)."""
    tmp = temp_beside(out)
    try:  # a fetch cut off (Ctrl-C, the server gone) leaves no part of it behind
        try:
            with _raw(api, "GET", f"/api/files/{record['id']}/content", {"spacecraft": spacecraft}) as resp, \
                    open(tmp, "wb") as f:
                shutil.copyfileobj(resp, f, 1 << 20)
        except KeyboardInterrupt:
            print(f"\ninterrupted: nothing written to {out}; the server keeps the file {record['id']} brought down: "
                  f"{_fetch_again(args, record['id'], out)}", file=sys.stderr)
            return EXIT_FAILED
        return _install(tmp, out, record, args.force)
    finally:
        tmp.unlink(missing_ok=True)


def _install(tmp: Path, out: Path, record: dict[str, Any], force: bool) -> int:
    sha = sha256_file(tmp)
    if sha != record.get("sha256"):
        print(f"{out}: SHA-256 {sha} is not the agent's {record.get('sha256')}; nothing written", file=sys.stderr)
        return EXIT_FAILED
    try:  # synced, renamed, its folder synced; over a file only with --force, one made meanwhile too
        install_output(tmp, out, replace=force)
    except FileExistsError:
        raise FileCliError(f"{out} exists (it was made while the file came down): not written over; get it again "
                           "with another --out, or --force") from None
    print(f"{out}: {size_text(out.stat().st_size)}, sha256 {sha} (checked against the agent's)")
    if isinstance(record.get("product"), dict):  # read as a product as it came down (ground/files.py)
        # The server's verdict, on its own copy (a trained model's summary read with the model beside it there),
        # whatever the product (found in use: every one was called a trained model's summary).
        print(f"{out}: {record['product'].get('verdict')} (as the ground server read it when it came down; "
              f"`sunlit-ground product show {out}` reads this copy whole)")
    return 0


# --- direct (the bench) ----------------------------------------------------------------------------


def _direct_files(args: argparse.Namespace) -> tuple[GroundClient, GroundFiles]:
    print(f"direct link {args.direct}: for debugging on the bench; the ground server does not archive these "
          "transfers and other operators do not see them", file=sys.stderr)
    client = direct_client(args.direct, getattr(args, 'tc_keys', None), getattr(args, 'zmq_server_public', None),
                           getattr(args, 'zmq_client_secret', None), getattr(args, 'tm_auth', False))
    try:
        client.connect(timeout_s=min(args.timeout, 20.0))
        files = GroundFiles(client, Path(args.area) / (args.spacecraft or "direct"))
    except BaseException:
        client.close()
        raise
    return client, files


def _run_direct(client: GroundClient, files: GroundFiles, rid: str, timeout_s: float) -> dict[str, Any]:
    show = _Shown()
    deadline = time.monotonic() + timeout_s
    next_ack = 0.0
    why_by = None  # a put the agent refused: a moment for its reason (its FILE_FAILED) to come after the Finished
    while True:
        record = files.records[rid]
        show(record.to_json())
        if record.settled and why_by is None:
            why_by = time.monotonic() + AGENT_REASON_WAIT_S
        if (record.settled and not (reason_to_come(record.to_json()) and time.monotonic() < why_by)) \
                or time.monotonic() >= deadline:
            return record.to_json()
        client.poll(0.02)
        files.service()
        if time.monotonic() >= next_ack:  # "the ground listens": the agent's contact and its store's playback
            next_ack = time.monotonic() + ACK_PERIOD_S
            client.acknowledge_store()


# --- subcommands -------------------------------------------------------------------------------


def _cmd_put(args: argparse.Namespace) -> int:
    local = Path(args.local)
    if not local.is_file():
        raise FileCliError(f"{local}: not a readable file")
    size = local.stat().st_size
    name = _checked(args.name, "up", size)
    if not args.direct:
        if size > MAX_UPLOAD_BYTES:  # as the server says it, before a byte is sent (or a login asked for)
            raise FileCliError(f"refused before sending: name: {name!r} is {size} bytes; a file put through the "
                               f"server is at most {MAX_UPLOAD_BYTES} bytes ({MAX_UPLOAD_BYTES >> 30} GiB)")
        return _put_server(args, local, name)
    client, files = _direct_files(args)
    before = set(files.records)
    try:
        try:
            record = files.put(local, name, args.cfdp_class, args.priority, who=os.environ.get("USER", ""))
            return _ended(_run_direct(client, files, record.id, args.timeout), args.timeout, "not followed further")
        except KeyboardInterrupt:  # what this run queued (its record made as Ctrl-C came too), never left to go
            made = [rid for rid in files.records if rid not in before]  # up with the next --direct run here
            if not made:
                print(f"\ninterrupted before its transfer was queued: nothing of {local} goes to the board",
                      file=sys.stderr)
                return EXIT_FAILED
            return _cancel_direct(client, files, made[0], name)
    finally:
        files.close()
        client.close()


def _cancel_direct(client: GroundClient, files: GroundFiles, rid: str, name: str) -> int:
    """Ctrl-C on a ``--direct`` put: its transfer cancelled here and CFDP's EOF(cancel) sent to the agent, and this
    process, the entity, kept until the agent says it dropped the file (its FILE_FAILED for ``name``) or
    :data:`DIRECT_CANCEL_S` passed: a PDU handed to the link may still be in its queue, which closing the link
    drops (found in review: the CLI ended as soon as the EOF was handed over); what that left said as it is."""
    print(f"\ninterrupted: cancelling {rid}", file=sys.stderr, flush=True)
    dropped: list[bool] = []

    def heard(item: Any) -> None:
        record = getattr(item, "record", None)
        if isinstance(record, EventRecord) and record.event.name == "FILE_FAILED" and record.args.get("name") == name:
            dropped.append(True)

    client.listeners.append(heard)
    try:
        files.cancel(rid, who=os.environ.get("USER", ""))
    except FileError:
        pass  # it had ended: its record says how
    started = bool(files.records[rid].to_json().get("started_s"))
    try:
        deadline = time.monotonic() + DIRECT_CANCEL_S
        while (files.entity.sending() or (started and not dropped)) and time.monotonic() < deadline:
            client.poll(0.02)
            files.service()
    except KeyboardInterrupt:
        pass
    finally:
        client.listeners.remove(heard)
    told = not files.entity.sending()
    record = files.records[rid].to_json()
    text, code = _settled_text(record, name)
    if record["state"] == "cancelled" and record.get("started_s"):
        if not told:
            text += (f" (its EOF(cancel) did not go out in {DIRECT_CANCEL_S:g} s: the agent gives the transfer up "
                     "after its inactivity time)")
        elif not dropped:
            text += (f" (the agent did not say it dropped it within {DIRECT_CANCEL_S:g} s: should the EOF(cancel) "
                     "have been lost, it gives the transfer up after its inactivity time)")
    print(text, file=sys.stderr if code else sys.stdout)
    return code


def _out_path(name: str, given: str | None, force: bool) -> Path:
    """Where a file that comes down is written (``--out``, or its base name here), checked before it is asked for."""
    base = name.rsplit("/", 1)[-1]
    if base in ("", ".", ".."):  # a name the agent gave a file it sent unasked: not one to write here as it is
        raise FileCliError(f"{_printable(name)}: no file name in it to write it as here: give --out")
    out = Path(given) if given else Path(base)
    if out.is_dir():
        out = out / base
    if os.path.lexists(out) and not force:  # a dangling link too: it would refuse the file at the end
        raise FileCliError(f"{out} exists: give --out another path, or --force")
    if not out.parent.is_dir():  # found before the transfer: once the whole file came down, then a traceback
        raise FileCliError(f"--out {out}: no folder {out.parent} to write it in")
    if not os.access(out.parent, os.W_OK | os.X_OK):  # the same, for a folder this user cannot write in (an audit)
        raise FileCliError(f"--out {out}: the folder {out.parent} cannot be written in by this user")
    return out


def _cmd_get(args: argparse.Namespace) -> int:
    name = _checked(args.name, "down")
    out = _out_path(name, args.out, args.force)
    if not args.direct:
        return _get_server(args, name, out)
    try:
        client, files = _direct_files(args)
    except KeyboardInterrupt:  # waiting for the agent (up to 20 s): nothing asked yet, and no server (an audit)
        print("\ninterrupted before FILE_DOWNLINK was sent: nothing was asked of the board", file=sys.stderr)
        return EXIT_FAILED
    before = set(files.records)
    try:
        try:
            record = files.get(name, args.cfdp_class, args.priority, who=os.environ.get("USER", ""))
            done = _run_direct(client, files, record.id, args.timeout)
        except KeyboardInterrupt:  # no server follows it (found in audit: "a transfer through the server goes on")
            return _stopped_direct_get(args, files, before, name, out)
        if done["state"] != "done":
            return _ended(done, args.timeout, "not followed further")
        tmp = temp_beside(out)
        try:
            shutil.copyfile(files.path_of(FileRecord.from_json(done)), tmp)
            return _install(tmp, out, done, args.force)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        files.close()
        client.close()


def _direct_again(args: argparse.Namespace, *words: str) -> str:
    """A ``sunlit-ground --direct`` command line on the link (and with the keys) this one used."""
    where = ["--direct", args.direct]
    for option, value in (("--tc-keys", getattr(args, "tc_keys", None)),
                          ("--zmq-server-public", getattr(args, "zmq_server_public", None)),
                          ("--zmq-client-secret", getattr(args, "zmq_client_secret", None))):
        where += [option, value] if value else []
    where += ["--tm-auth"] if getattr(args, "tm_auth", False) else []
    return "`" + " ".join(shlex.quote(w) for w in ("sunlit-ground", *where, *words)) + "`"


def _stopped_direct_get(args: argparse.Namespace, files: GroundFiles, before: set[str], name: str, out: Path) -> int:
    """Ctrl-C on a ``--direct`` get: what the board may still do, and how to stop it there (this process, the only
    one that would have taken the file, ends)."""
    made = [rid for rid in files.records if rid not in before]
    record = files.records[made[0]] if made else None
    rid = record.id if record is not None else "FILE_DOWNLINK"
    on_board = record.agent_transfer if record is not None else None
    if on_board:
        stop = f"{_direct_again(args, 'send', 'FILE_CANCEL', f'transfer={on_board}')} stops it"
    else:
        stop = (f"{_direct_again(args, 'file', 'status')} names its transfer there, and "
                f"{_direct_again(args, 'send', 'FILE_CANCEL', 'transfer=ID')} stops it")
    print(f"\ninterrupted: stopped following {rid}; nothing is written to {out}, and no server follows a --direct "
          f"get: the agent may go on sending {name}" + (f" (its {on_board})" if on_board else "") + f"; {stop}",
          file=sys.stderr)
    return EXIT_FAILED


def _command(args: argparse.Namespace, name: str, values: dict[str, Any]) -> dict[str, Any] | int:
    """Send one command (through the server, or ``--direct``) and wait for its end: its result,
    or an exit code after saying why."""
    if args.direct:
        print(f"direct link {args.direct}: for debugging on the bench", file=sys.stderr)
        client: GroundClient = direct_client(args.direct, getattr(args, 'tc_keys', None),
                                             getattr(args, 'zmq_server_public', None),
                                             getattr(args, 'zmq_client_secret', None), getattr(args, 'tm_auth', False))
    else:
        client = ServerClient(_api(args), args.spacecraft)
    pending: list[int] = []

    def entry(e: dict[str, Any]) -> None:  # the two-person rule: said at once, as `sunlit-ground send` says it
        if e["state"] == "pending_approval":
            pending.append(e["id"])
            print(f"{name}: waiting for a second operator's approval (queue entry {e['id']}: sunlit-ground approve "
                  f"{e['id']})", file=sys.stderr, flush=True)

    try:
        result = client.send(name, values, timeout_s=args.timeout,
                             **({"on_entry": entry} if isinstance(client, ServerClient) else {}))
    except CommandOutcomeUnknown as exc:
        print(f"unknown: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    except CommandTimeout as exc:
        if pending and "pending_approval" in str(exc):  # not failed: it runs once approved (found in audit)
            print(f"{name}: still waiting for approval after {args.timeout:g} s; it stays queued on the server "
                  f"(entry {pending[-1]}) and runs once approved", file=sys.stderr)
            return EXIT_AWAITING_APPROVAL
        print(f"timeout: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT  # it never ran, as `send` says it (found in audit: 1, "failed")
    except KeyboardInterrupt:  # it may have gone out (found in audit: exit 1, "a transfer goes on")
        print(f"\ninterrupted: {name} may have been sent; its outcome is unknown (see `sunlit-ground queue` and "
              "`sunlit-ground events` before sending it again)", file=sys.stderr)
        return EXIT_UNKNOWN
    finally:
        client.close()
    if not result.completed:
        print(f"{name}: {result.outcome}", file=sys.stderr)
        return EXIT_FAILED
    return result.result


def _cmd_list(args: argparse.Namespace) -> int:
    answer = _command(args, "FILE_LIST", {"directory": args.directory})
    if isinstance(answer, int):
        return answer
    for name, size, mtime in answer.get("entries", []):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(mtime))
        # whatever is on board, printable (found in audit: an escape or a line break in a name reached the terminal)
        print(f"{stamp}  {size_text(size) if not name.endswith('/') else '':>9}  "
              f"{_printable(answer.get('directory'))}/{_printable(name)}")
    more = answer.get("count", 0) - len(answer.get("entries", []))
    if more > 0:
        print(f"... and {more} more")
    print(f"{answer.get('count', 0)} entries; {answer.get('free_mb')} MB free on board")
    return 0


def _cmd_rm(args: argparse.Namespace) -> int:
    command = DICTIONARY.command("FILE_DELETE")
    if not args.yes:
        if not sys.stdin.isatty():
            raise FileCliError("FILE_DELETE is hazardous and there is no terminal to confirm it on: give --yes",
                               EXIT_NOT_CONFIRMED)
        try:
            answer = input(f"{command.description}\nDelete {args.name} on board? [y/N] ")
        except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C at the question: a no, as `send` takes it
            print(file=sys.stderr)  # (found in audit: Ctrl-C said a transfer goes on, exit 1)
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            raise FileCliError("not deleted", EXIT_NOT_CONFIRMED)
    answer = _command(args, "FILE_DELETE", {"name": args.name})
    if isinstance(answer, int):
        return answer
    print(f"{answer.get('name')}: deleted ({size_text(answer.get('bytes'))})")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    if args.direct:
        answer = _command(args, "FILE_STATUS", {})
        if isinstance(answer, int):
            return answer
        for tid, direction, name, size, progress, state, reason in answer.get("transfers", []):
            print(progress_text({"id": tid, "state": state, "progress": progress, "size": size, "reason": reason})
                  + f"  {direction} {name}")
        print(", ".join(f"{k} {v}" for k, v in answer.items() if k != "transfers"))
        return 0
    api = _api(args)
    spacecraft = args.spacecraft or api.default_spacecraft()
    answer = api.get("/api/files", spacecraft=spacecraft)
    for r in answer["transfers"][:args.last]:
        # Names as an operator gave them: printable only (an escape in one reached other operators' terminals)
        local, remote = _printable(r.get("local") or "?"), _printable(r["remote"])
        arrow = f"{local} -> {remote}" if r["direction"] == "up" else f"{remote} -> {local}"
        print(f"{progress_text(r)}  [{r['direction']} {arrow}; {r.get('who') or 'the agent'}]")
    status = answer.get("status") or {}
    print(f"{spacecraft}: {'SUSPENDED (no telemetry heard)' if status.get('suspended') else 'in contact'}; "
          f"uplink budget {status.get('rate_bps')} B/s; {status.get('done', 0)} done, {status.get('failed', 0)} "
          f"failed since the server started")
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    """Stop a transfer the server follows (``status`` names it): the way to one a put's Ctrl-C left unknown."""
    if args.direct:
        raise FileCliError("--direct: a put lives in the process that started it, and Ctrl-C there cancels it; a "
                           "file the agent sends: " + _direct_again(args, "send", "FILE_CANCEL", "transfer=ID")
                           + " (its id from `file status`)")
    api = _api(args)
    spacecraft = args.spacecraft or api.default_spacecraft()
    record = api.post(f"/api/files/{urllib.parse.quote(args.id)}/cancel", {"spacecraft": spacecraft})
    if record["direction"] == "up" and record["state"] == "cancelled":
        text, code = _cancelled_text(record, record["remote"])
        print(text, file=sys.stdout if code == EXIT_FAILED else sys.stderr)
        return 0 if code == EXIT_FAILED else code  # 0: cancelled, nothing of it in place on board
    print(f"{record['id']} {record['state']}: {record.get('reason')}")
    return 0 if record["state"] == "cancelled" else EXIT_UNKNOWN


def _cmd_fetch(args: argparse.Namespace) -> int:
    """A file a transfer brought down, from the server (``status`` names it): the way to one that a get's timeout or
    Ctrl-C left coming, or that another operator asked for, without asking the board again."""
    if args.direct:
        raise FileCliError("--direct: what came down is in --area's downlink/; `fetch` reads the server's")
    api = _api(args)
    spacecraft = args.spacecraft or api.default_spacecraft()
    record = _listed(api, spacecraft, args.id)
    if record is None:
        raise FileCliError(f"no transfer {args.id!r} among {spacecraft}'s recent ones (`sunlit-ground file status`)",
                           EXIT_FAILED)
    if record["direction"] != "down":
        raise FileCliError(f"{args.id} went up, nothing of it came down: `sunlit-ground file get NAME` asks for a file")
    if record["state"] != "done":
        print(f"{args.id} is {record['state']}" + (f": {record.get('reason')}" if record["state"] in SETTLED else
                                                   ", not down whole yet: `sunlit-ground file status` follows it"),
              file=sys.stderr)
        return EXIT_FAILED
    return _fetch(args, api, spacecraft, record, _out_path(record["remote"], args.out, args.force))


def _checked(name: str, direction: str, size_bytes: int | None = None) -> str:
    try:
        return check_remote(name, direction, size_bytes)
    except FileError as exc:
        raise FileCliError(f"refused before sending: {exc}") from None


STOPPED = "stopped here; a transfer through the server goes on (sunlit-ground file status)"


def _guarded(func: Callable[[argparse.Namespace], int], stopped: str = STOPPED) -> Callable[[argparse.Namespace], int]:
    """``stopped``: what a Ctrl-C the subcommand does not take itself leaves (a put takes it once its upload starts)."""
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except FileCliError as exc:
            print(str(exc), file=sys.stderr)
            return exc.code
        except (FileError, ArgumentError) as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return EXIT_INPUT
        except TimeoutError as exc:
            print(f"no agent: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except OSError as exc:  # a local file or folder (a disk full as a fetched file is written): said, no traceback
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"{where}{exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt:
            print(f"\n{stopped}", file=sys.stderr)
            return EXIT_FAILED
    return run


# A transfer's queue priority, checked before anything is asked (found in audit: --priority -5 refused by the
# server only once the whole file had gone up to it). The range the agent takes, from its dictionary: a get is
# FILE_DOWNLINK's priority, and the ground's own queue takes the same (flight/files/entity.py).
_PRIORITY_SPEC = DICTIONARY.command("FILE_DOWNLINK").arg("priority").spec
_PRIORITIES = (int(_PRIORITY_SPEC.min), int(_PRIORITY_SPEC.max))


def add_file_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``file`` and its subcommands to a parser's subparsers; each sets ``func``."""
    top = subparsers.add_parser("file", help="files to and from a spacecraft (CFDP): put, get, fetch, list, rm, "
                                "status, cancel",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="file_cmd", required=True)

    def transfer(p: argparse.ArgumentParser, timeout_s: float) -> None:
        p.add_argument("--class", dest="cfdp_class", type=int, choices=(1, 2), default=2,
                       help="CFDP class: 2 acknowledged (default), 1 sent once")
        p.add_argument("--priority", type=_count(*_PRIORITIES), default=5,
                       help=f"{_PRIORITIES[0]} first, to {_PRIORITIES[1]} (default 5)")
        p.add_argument("--timeout", type=_seconds, default=timeout_s, metavar="S", help="how long to follow it")
        p.add_argument("--area", default="var/ground-files", help="--direct: the local file area")

    put = sub.add_parser("put", help="send a local file to the agent (staging/, incoming/, data/ or sequences/)")
    put.add_argument("local")
    put.add_argument("name", help="its name on board, e.g. staging/model.onnx")
    put.add_argument("--no-wait", action="store_true", help="through the server: queue it and return")
    transfer(put, 600.0)
    put.set_defaults(func=_guarded(_cmd_put, "interrupted before the upload began: nothing goes to the board"))

    get = sub.add_parser("get", help="fetch a file of the agent's (products/, checkpoints/, logs/...)")
    get.add_argument("name", help="its name on board, e.g. products/job-3.json")
    get.add_argument("--out", help="where to write it (default: its base name here)")
    get.add_argument("--force", action="store_true", help="write over an existing --out")
    transfer(get, 600.0)
    get.set_defaults(func=_guarded(_cmd_get))

    ls = sub.add_parser("list", help="FILE_LIST: a directory of the agent's file area")
    ls.add_argument("directory", nargs="?", default="products")
    ls.add_argument("--timeout", type=_seconds, default=10.0, metavar="S")
    ls.set_defaults(func=_guarded(_cmd_list))

    rm = sub.add_parser("rm", help="FILE_DELETE: delete a file on board (hazardous)")
    rm.add_argument("name")
    rm.add_argument("--yes", action="store_true", help="delete without asking")
    rm.add_argument("--timeout", type=_seconds, default=10.0, metavar="S")
    rm.set_defaults(func=_guarded(_cmd_rm))

    fetch = sub.add_parser("fetch", help="write a file a transfer brought down, from the server (its id from status: "
                           "get-N), without asking the board again")
    fetch.add_argument("id")
    fetch.add_argument("--out", help="where to write it (default: its base name here)")
    fetch.add_argument("--force", action="store_true", help="write over an existing --out")
    fetch.set_defaults(func=_guarded(_cmd_fetch, "interrupted: the server keeps the file; `file fetch` again writes it "
                                                  "(no part of it is left half-written)"))

    cancel = sub.add_parser("cancel", help="stop a transfer the server follows (its id from status: out-N, get-N)")
    cancel.add_argument("id")
    cancel.set_defaults(func=_guarded(_cmd_cancel))

    st = sub.add_parser("status", help="the transfers the server follows (--direct: the agent's FILE_STATUS)")
    st.add_argument("--last", type=_count(1, 100_000), default=30, help="at most this many")
    st.add_argument("--timeout", type=_seconds, default=10.0, metavar="S")
    st.set_defaults(func=_guarded(_cmd_status))
    return top
