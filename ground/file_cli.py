"""``sunlit-ground file put|get|list|rm|status``: files to and from a spacecraft.

Through the ground server by default (after ``sunlit-ground login``): ``put`` uploads the file
to the server, which sends it by CFDP (docs/ground-api.md, "File transfer"); ``get`` has the
server send FILE_DOWNLINK through its queue, and fetches the file once it is down whole. Both
follow the transfer to its end, with its progress, and the exit code says how it ended.
``--direct LINK`` runs a CFDP entity of its own on the agent's link, for the bench: its file
area is ``--area`` (``var/ground-files/direct``), nothing goes to the server's archive.

- ``put LOCAL NAME``: LOCAL to the agent as NAME (under staging/, incoming/ or data/);
- ``get NAME [--out PATH]``: the agent's NAME (under products/, checkpoints/, logs/, staging/,
  incoming/ or data/) to PATH (default: its base name here; an existing file, one made while the
  file came down too, is kept unless ``--force``: exit 2), written whole beside it and renamed into
  place; the SHA-256 the agent sent is checked against what was written;
- ``list [DIRECTORY]``: FILE_LIST (names, sizes, times, free space on board);
- ``rm NAME``: FILE_DELETE (hazardous: asks, or ``--yes``);
- ``status``: the transfers the server follows (``--direct``: the agent's FILE_STATUS).

Exit codes: 0 done; 1 the transfer or command failed, or the transfer did not end within
``--timeout`` (it goes on; ``status`` follows it); 2 bad input, no server, not logged in; 3 a
hazardous command not confirmed (Ctrl-C at its question too); 4 a command (list, rm, status with
``--direct``) timed out: it never ran; 5 a command still waits for a second operator's approval
(it stays queued on the server); 6 a command's outcome is unknown (Ctrl-C as it is followed too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

from flight.files.entity import FileError
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import ArgumentError
from ground.api import ApiClient, ServerClient, ServerError, load_token
from ground.cli_args import count as _count, install_output, printable as _printable, seconds as _seconds, temp_beside
from ground.client import CommandOutcomeUnknown, CommandTimeout, GroundClient, direct_client
from ground.files import SETTLED, FileRecord, GroundFiles, check_remote, sha256_file

EXIT_FAILED, EXIT_INPUT, EXIT_NOT_CONFIRMED, EXIT_TIMEOUT, EXIT_AWAITING_APPROVAL, EXIT_UNKNOWN = 1, 2, 3, 4, 5, 6
POLL_S = 0.5          # how often the server's list is read while following a transfer
ACK_PERIOD_S = 1.0    # --direct: the store acknowledgement that tells the agent the ground listens


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
         headers: dict[str, str] | None = None) -> Any:
    """A request whose body or answer is a file: the open response (the caller reads and closes it)."""
    url = f"{api.server}{path}?{urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})}"
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Authorization": f"Bearer {api.token}", **(headers or {})})
    try:
        return urllib.request.urlopen(request, timeout=max(api.timeout_s, 600.0))
    except urllib.error.HTTPError as exc:
        try:
            answer = json.loads(exc.read() or b"{}")
        except ValueError:
            answer = {}
        raise ServerError(answer.get("error") or f"HTTP {exc.code} from {url}", exc.code, answer.get("code", "")) \
            from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServerError(f"cannot reach the ground server at {api.server}: {getattr(exc, 'reason', exc)}") from None


def _follow(api: ApiClient, spacecraft: str, record: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """The record once it settles, or as it stands when ``timeout_s`` passes; progress printed."""
    show = _Shown()
    show(record)
    deadline = time.monotonic() + timeout_s
    while record["state"] not in SETTLED and time.monotonic() < deadline:
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        answer = api.get("/api/files", spacecraft=spacecraft)
        record = next((r for r in answer["transfers"] if r["id"] == record["id"]), record)
        show(record)
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


def _put_server(args: argparse.Namespace, local: Path, name: str) -> int:
    api = _api(args)
    spacecraft = args.spacecraft or api.default_spacecraft()
    with open(local, "rb") as body:
        query = {"spacecraft": spacecraft, "name": name, "cfdp_class": args.cfdp_class, "priority": args.priority,
                 "filename": str(local)}
        with _raw(api, "POST", "/api/files/put", query, body,
                  {"Content-Type": "application/octet-stream", "Content-Length": str(local.stat().st_size)}) as resp:
            record = json.loads(resp.read())
    print(f"{local} -> {spacecraft}:{name} as {record['id']} ({size_text(record.get('size'))})", flush=True)
    if args.no_wait:
        return 0
    record = _follow(api, spacecraft, record, args.timeout)
    if record["state"] == "done":
        print(f"{name}: delivered, sha256 {record.get('sha256')}")
    return _ended(record, args.timeout, "sunlit-ground file status")


def _get_server(args: argparse.Namespace, name: str, out: Path) -> int:
    api = _api(args)
    spacecraft = args.spacecraft or api.default_spacecraft()
    record = api.post("/api/files/get", {"spacecraft": spacecraft, "name": name, "cfdp_class": args.cfdp_class,
                                         "priority": args.priority})
    print(f"{spacecraft}:{name} asked for as {record['id']} (FILE_DOWNLINK through the queue)", flush=True)
    record = _follow(api, spacecraft, record, args.timeout)
    if record["state"] != "done":
        return _ended(record, args.timeout, "sunlit-ground file status; the server keeps the file when it comes")
    tmp = temp_beside(out)
    try:  # a fetch cut off (Ctrl-C, the server gone) leaves no part of it behind
        with _raw(api, "GET", f"/api/files/{record['id']}/content", {"spacecraft": spacecraft}) as resp, \
                open(tmp, "wb") as f:
            shutil.copyfileobj(resp, f, 1 << 20)
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
    while True:
        record = files.records[rid]
        show(record.to_json())
        if record.settled or time.monotonic() >= deadline:
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
    name = _checked(args.name, "up")
    if not args.direct:
        return _put_server(args, local, name)
    client, files = _direct_files(args)
    try:
        record = files.put(local, name, args.cfdp_class, args.priority, who=os.environ.get("USER", ""))
        return _ended(_run_direct(client, files, record.id, args.timeout), args.timeout, "not followed further")
    finally:
        files.close()
        client.close()


def _cmd_get(args: argparse.Namespace) -> int:
    name = _checked(args.name, "down")
    out = Path(args.out) if args.out else Path(name.rsplit("/", 1)[-1])
    if out.is_dir():
        out = out / name.rsplit("/", 1)[-1]
    if os.path.lexists(out) and not args.force:  # a dangling link too: it would refuse the file at the end
        raise FileCliError(f"{out} exists: give --out another path, or --force")
    if not out.parent.is_dir():  # found before the transfer: once the whole file came down, then a traceback
        raise FileCliError(f"--out {out}: no folder {out.parent} to write it in")
    if not os.access(out.parent, os.W_OK | os.X_OK):  # the same, for a folder this user cannot write in (an audit)
        raise FileCliError(f"--out {out}: the folder {out.parent} cannot be written in by this user")
    if not args.direct:
        return _get_server(args, name, out)
    client, files = _direct_files(args)
    try:
        record = files.get(name, args.cfdp_class, args.priority, who=os.environ.get("USER", ""))
        done = _run_direct(client, files, record.id, args.timeout)
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
        print(f"{stamp}  {size_text(size) if not name.endswith('/') else '':>9}  {answer.get('directory')}/{name}")
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


def _checked(name: str, direction: str) -> str:
    try:
        return check_remote(name, direction)
    except FileError as exc:
        raise FileCliError(f"refused before sending: {exc}") from None


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
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
            print("stopped here; a transfer through the server goes on (sunlit-ground file status)", file=sys.stderr)
            return EXIT_FAILED
    return run


def add_file_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``file`` and its subcommands to a parser's subparsers; each sets ``func``."""
    top = subparsers.add_parser("file", help="files to and from a spacecraft (CFDP): put, get, list, rm, status",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="file_cmd", required=True)

    def transfer(p: argparse.ArgumentParser, timeout_s: float) -> None:
        p.add_argument("--class", dest="cfdp_class", type=int, choices=(1, 2), default=2,
                       help="CFDP class: 2 acknowledged (default), 1 sent once")
        p.add_argument("--priority", type=int, default=5, help="0 first (default 5)")
        p.add_argument("--timeout", type=_seconds, default=timeout_s, metavar="S", help="how long to follow it")
        p.add_argument("--area", default="var/ground-files", help="--direct: the local file area")

    put = sub.add_parser("put", help="send a local file to the agent (staging/, incoming/ or data/)")
    put.add_argument("local")
    put.add_argument("name", help="its name on board, e.g. staging/model.onnx")
    put.add_argument("--no-wait", action="store_true", help="through the server: queue it and return")
    transfer(put, 600.0)
    put.set_defaults(func=_guarded(_cmd_put))

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

    st = sub.add_parser("status", help="the transfers the server follows (--direct: the agent's FILE_STATUS)")
    st.add_argument("--last", type=_count(1, 100_000), default=30, help="at most this many")
    st.add_argument("--timeout", type=_seconds, default=10.0, metavar="S")
    st.set_defaults(func=_guarded(_cmd_status))
    return top
