"""The ground server's configuration (TOML), checked with errors that name the key (pure).

::

    [server]
    host = "127.0.0.1"          # loopback unless operators elsewhere must reach it (then TLS in front)
    port = 8080
    archive = "var/ground.sqlite"
    users = "etc/ground-users.toml"
    allowed_hosts = []          # names this server is reached by, besides loopback (DNS-rebinding guard)
    cookie_secure = false       # true when served over HTTPS (behind a TLS proxy)
    session_idle_s = 28800

    [[spacecraft]]
    id = "sunlit-1"
    link = "zmq+ipc:///tmp/sunlit-link"
    # tc_keys = "/etc/sunlit-ground/keys/sunlit-1.keys"  # seal every telecommand (flight/link/sdls.py)
    # zmq_server_public = "/etc/sunlit-ground/keys/zmq/sunlit-1.key"      # CurveZMQ (flight/link/curve.py):
    # zmq_client_secret = "/etc/sunlit-ground/keys/zmq/ground.key_secret" # both or neither; the agent must
    #                             # list this ground's ground.key in its [security] zmq_clients

    [commands]
    two_person = ["SHUTDOWN"]   # or "hazardous": every hazardous command needs a second operator

    [queue]                     # each stage's window, seconds
    accepted_s = 10.0
    completed_s = 60.0
    completed_by_command_s = { TRAIN_START = 600.0 }

    [retention]                 # per packet kind; see ground.archive.RetentionPolicy
    AGENT_HK = { max_age_days = 30, max_mb = 512 }

    [files]                     # file transfer (ground.files)
    dir = "var/files"           # file areas, one per spacecraft (default: files/ beside the archive)
    rate_bps = 100000           # most bytes per second of CFDP PDUs up, beside commands
    los_s = 30                  # no telemetry for this long: transactions suspended
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flight import toml_text
from flight.agent.schedule import NOT_SCHEDULABLE_PREFIXES
from flight.link.dictionary import Dictionary
from flight.storage import ReadRefused, read_file_or_pipe
from ground.queue import Timeouts

SPACECRAFT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
HOST_NAME = re.compile(r"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$|^\[[0-9a-fA-F:]+\](:[0-9]{1,5})?$")
DEFAULT_SPACECRAFT = "sunlit-1"


class ServerConfigError(ValueError):
    """A configuration that cannot be used; the message names the key."""


@dataclass(frozen=True)
class SpacecraftConfig:
    id: str
    link: str
    tc_keys: str | None = None  # the spacecraft's telecommand key slots: every command sealed (flight/link/sdls.py)
    zmq_server_public: str | None = None  # CurveZMQ: the agent's public certificate (NAME.key)
    zmq_client_secret: str | None = None  # CurveZMQ: this ground's secret certificate (NAME.key_secret, mode 600)
    tm_auth: bool = False  # check every telemetry packet against tc_keys' telemetry slot (the agent's tm_auth)

    def link_curve(self) -> Any:
        """The CurveKeys to open this spacecraft's link with, or None (a plain link)."""
        if self.zmq_server_public is None or self.zmq_client_secret is None:
            return None
        from flight.link.curve import client_keys

        return client_keys(self.zmq_server_public, self.zmq_client_secret)


@dataclass(frozen=True)
class FilesConfig:
    """File transfer: where the file areas are (None: ``files/`` beside the archive, or a
    temporary directory without one), the uplink's byte rate and when silence is loss of signal."""

    dir: Path | None = None
    rate_bps: float = 100_000.0
    los_s: float = 30.0


@dataclass(frozen=True)
class ServerConfig:
    spacecraft: tuple[SpacecraftConfig, ...]
    host: str = "127.0.0.1"
    port: int = 8080
    archive: Path | None = Path("var/ground.sqlite")
    users: Path = Path("etc/ground-users.toml")
    allowed_hosts: tuple[str, ...] = ()
    cookie_secure: bool = False
    session_idle_s: float = 8 * 3600.0
    two_person: frozenset[str] = frozenset()
    timeouts: Timeouts = field(default_factory=Timeouts)
    retention: dict[str, Any] = field(default_factory=dict)
    retention_period_s: float = 300.0
    files: FilesConfig = field(default_factory=FilesConfig)

    def spacecraft_ids(self) -> list[str]:
        return [sc.id for sc in self.spacecraft]


def check_spacecraft_id(value: Any, where: str = "spacecraft.id") -> str:
    if not isinstance(value, str) or not SPACECRAFT_ID.match(value):
        raise ServerConfigError(f"{where}: {value!r} is not a spacecraft id (letters, digits, '_', '.', '-', "
                                "at most 32, starting with a letter or digit)")
    return value


def _number(table: dict, key: str, where: str, lo: float, hi: float, default: float) -> float:
    value = table.get(key, default)
    # the range first: it refuses NaN and inf too, and a 400-digit integer raised OverflowError out of isfinite
    # (found in audit: a traceback)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi \
            or not math.isfinite(value):
        text = repr(value)
        shown = text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"
        raise ServerConfigError(f"{where}.{key}: {shown} must be a number in [{lo:g}, {hi:g}]")
    return float(value)


def _unknown(table: dict, allowed: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise ServerConfigError(f"{where}: {table!r} must be a table ([{where}] with {', '.join(sorted(allowed))})")
    extra = sorted(set(table) - allowed)
    if extra:
        raise ServerConfigError(f"{where}.{extra[0]}: unknown key (known: {', '.join(sorted(allowed))})")


def _curve_files(sc: dict, where: str, base: Path = Path(".")) -> tuple[str | None, str | None]:
    """[[spacecraft]] zmq_server_public and zmq_client_secret: both or neither, each checked (a relative one taken
    from ``base``, as every path of the file is)."""
    from flight.link.curve import CurveKeyError, load_public, load_secret

    public, secret = sc.get("zmq_server_public"), sc.get("zmq_client_secret")
    if (public is None) != (secret is None):
        given, missing = ("zmq_server_public", "zmq_client_secret") if secret is None else \
            ("zmq_client_secret", "zmq_server_public")
        raise ServerConfigError(f"{where}.{missing}: required with {given} (CurveZMQ needs the agent's public "
                                "certificate and this ground's secret one)")
    for key, value, check in (("zmq_server_public", public, load_public), ("zmq_client_secret", secret, load_secret)):
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise ServerConfigError(f"{where}.{key}: {value!r} must be the path of a certificate file")
        value = str(base / value)
        try:
            check(value)
        except CurveKeyError as exc:
            raise ServerConfigError(f"{where}.{key}: {exc}") from None
        public, secret = (value, secret) if key == "zmq_server_public" else (public, value)
    return public, secret


def parse_two_person(value: Any, dictionary: Dictionary, where: str = "commands.two_person") -> frozenset[str]:
    if value == "hazardous":
        return frozenset(c.name for c in dictionary.commands if c.hazardous)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ServerConfigError(f"{where}: a list of command names, or \"hazardous\"")
    unknown = [v for v in value if v not in dictionary.command_by_name]
    if unknown:
        raise ServerConfigError(f"{where}: no command {unknown[0]!r} in the dictionary")
    names = frozenset(value)
    # A stored sequence runs its steps on board under SEQUENCE_START's rule alone (found in review: one operator ran
    # SHUTDOWN, under the rule, as a sequence's step): a rule on any command a step can be holds SEQUENCE_START too.
    # (A time tag carries its command in its arguments: the server checks that one at submit.)
    if any(not name.startswith(NOT_SCHEDULABLE_PREFIXES) for name in names):
        names |= {"SEQUENCE_START"}
    return names


def server_config_from_mapping(data: dict[str, Any], dictionary: Dictionary, base: Path = Path(".")) -> ServerConfig:
    """A checked configuration; relative paths are taken from ``base`` (the file's folder)."""
    _unknown(data, {"server", "spacecraft", "commands", "queue", "retention", "files"}, "config")
    srv = data.get("server", {})
    if not isinstance(srv, dict):
        raise ServerConfigError("server: must be a table")
    _unknown(srv, {"host", "port", "archive", "users", "allowed_hosts", "cookie_secure", "session_idle_s",
                   "retention_period_s"}, "server")
    host = srv.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise ServerConfigError(f"server.host: {host!r} must be an address")
    port = srv.get("port", 8080)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ServerConfigError(f"server.port: {port!r} must be an integer in [0, 65535]")
    hosts = srv.get("allowed_hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) and HOST_NAME.match(h) for h in hosts):
        raise ServerConfigError("server.allowed_hosts: a list of host names (optionally with :port)")
    secure = srv.get("cookie_secure", False)
    if not isinstance(secure, bool):
        raise ServerConfigError("server.cookie_secure: true or false")
    archive = srv.get("archive", "var/ground.sqlite")
    users = srv.get("users", "etc/ground-users.toml")
    for key, value in (("archive", archive), ("users", users)):
        if not isinstance(value, str) or not value or "\0" in value:
            raise ServerConfigError(f"server.{key}: a file path")
    crafts = data.get("spacecraft", [])
    if not isinstance(crafts, list) or not crafts:
        raise ServerConfigError("spacecraft: at least one [[spacecraft]] with id and link")
    seen: set[str] = set()
    spacecraft = []
    for i, sc in enumerate(crafts):
        where = f"spacecraft[{i}]"
        if not isinstance(sc, dict):
            raise ServerConfigError(f"{where}: must be a table with id and link")
        _unknown(sc, {"id", "link", "tc_keys", "tm_auth", "zmq_server_public", "zmq_client_secret"}, where)
        sc_id = check_spacecraft_id(sc.get("id"), f"{where}.id")
        if sc_id in seen:
            raise ServerConfigError(f"{where}.id: {sc_id!r} appears twice")
        seen.add(sc_id)
        link = sc.get("link")
        if not isinstance(link, str) or "://" not in link:
            raise ServerConfigError(f"{where}.link: {link!r} must be a link URL (zmq+ipc://..., serial:///dev/...)")
        from flight.link.transport import LinkConfigError, parse_link_url

        try:
            parse_link_url(link)  # its scheme and options, here: the key named (an audit: only the URL was)
        except LinkConfigError as exc:
            raise ServerConfigError(f"{where}.link: {exc}") from None
        tc_keys = sc.get("tc_keys")
        if tc_keys is not None:
            from flight.link.sdls import KeyFileError, KeyRing

            # an empty one read the folder (".: not a regular file"), a NUL ended in a traceback (found in audit)
            if not isinstance(tc_keys, str) or not tc_keys or "\0" in tc_keys:
                raise ServerConfigError(f"{where}.tc_keys: {tc_keys!r} must be the path of a key file")
            tc_keys = str(base / tc_keys)  # from the file's folder, as archive and users are (found in audit: from
            try:                           # wherever the server was started, another file or none)
                ring = KeyRing.load(tc_keys)
            except KeyFileError as exc:
                raise ServerConfigError(f"{where}.tc_keys: {exc}") from None
        tm_auth = sc.get("tm_auth", False)
        if not isinstance(tm_auth, bool):
            raise ServerConfigError(f"{where}.tm_auth: {tm_auth!r} must be true or false")
        if tm_auth and (tc_keys is None or ring.telemetry_slot() is None):
            raise ServerConfigError(f"{where}.tm_auth: true needs tc_keys with a telemetry slot ('SPI HEX telemetry')")
        curve = _curve_files(sc, where, base)
        spacecraft.append(SpacecraftConfig(sc_id, link, tc_keys, *curve, tm_auth=tm_auth))
    cmds = data.get("commands", {})
    _unknown(cmds, {"two_person"}, "commands")
    two_person = parse_two_person(cmds.get("two_person", []), dictionary)
    q = data.get("queue", {})
    _unknown(q, {"approval_s", "release_s", "accepted_s", "completed_s", "completed_by_command_s"}, "queue")
    by_cmd = q.get("completed_by_command_s", {})
    if not isinstance(by_cmd, dict):
        raise ServerConfigError("queue.completed_by_command_s: a table of COMMAND = seconds")
    for name in by_cmd:
        if name not in dictionary.command_by_name:
            raise ServerConfigError(f"queue.completed_by_command_s.{name}: no such command")
    timeouts = Timeouts(
        approval_s=_number(q, "approval_s", "queue", 1, 86400, 600),
        release_s=_number(q, "release_s", "queue", 0.1, 3600, 30),
        accepted_s=_number(q, "accepted_s", "queue", 0.1, 3600, 10),
        completed_s=_number(q, "completed_s", "queue", 0.1, 86400, 60),
        completed_by_command_s={k: _number(by_cmd, k, "queue.completed_by_command_s", 0.1, 86400, 60) for k in by_cmd},
    )
    retention = data.get("retention", {})
    if not isinstance(retention, dict):
        raise ServerConfigError("retention: must be a table")
    from ground.archive import RetentionPolicy

    try:  # here, naming the file (found in audit: refused only as the server started, its archive made first)
        RetentionPolicy.from_mapping(retention, dictionary)
    except ValueError as exc:
        raise ServerConfigError(str(exc)) from None
    files = data.get("files", {})
    if not isinstance(files, dict):
        raise ServerConfigError("files: must be a table")
    _unknown(files, {"dir", "rate_bps", "los_s"}, "files")
    files_dir = files.get("dir")
    if files_dir is not None and (not isinstance(files_dir, str) or not files_dir or "\0" in files_dir):
        raise ServerConfigError("files.dir: a directory path")
    files_config = FilesConfig(None if files_dir is None else base / files_dir,
                               _number(files, "rate_bps", "files", 100, 1e9, 100_000),
                               _number(files, "los_s", "files", 1, 86400, 30))
    return ServerConfig(
        spacecraft=tuple(spacecraft), host=host, port=port, archive=(base / archive), users=(base / users),
        allowed_hosts=tuple(hosts), cookie_secure=secure,
        session_idle_s=_number(srv, "session_idle_s", "server", 60, 7 * 86400, 8 * 3600),
        two_person=two_person, timeouts=timeouts, retention=retention,
        retention_period_s=_number(srv, "retention_period_s", "server", 1, 86400, 300), files=files_config,
    )


MAX_CONFIG_BYTES = 1024 * 1024
"""The most a configuration file may hold: a fleet's, comments included, is a few KiB."""


def _read_config_text(path: Path) -> str:
    """The file's text, from a regular file or a pipe with a writer (``--config <(...)``), at most
    :data:`MAX_CONFIG_BYTES` (found in audit: ``--config /dev/zero`` read on until memory ran out, and a named
    pipe no one writes hung the start for good), as the agent reads its own (flight/config.py)."""
    try:
        data = read_file_or_pipe(path, MAX_CONFIG_BYTES)
    except IsADirectoryError:
        raise ServerConfigError(f"{path}: a folder: give the configuration file itself") from None
    except ReadRefused as exc:
        why = {"type": "give the configuration file itself", "empty": "start what writes it first, or give a file",
               "limit": "no configuration is that long: is it the right file?"}[exc.kind]
        raise ServerConfigError(f"{path}: {exc}: {why}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ServerConfigError(f"{path}: not UTF-8 text (byte {exc.start}); a configuration is TOML") from None


def load_server_config(path: Path | str, dictionary: Dictionary) -> ServerConfig:
    path = Path(path)
    try:
        text = _read_config_text(path)
    except FileNotFoundError:
        raise ServerConfigError(f"{path}: no such configuration file") from None
    except OSError as exc:
        raise ServerConfigError(f"{path}: {exc.strerror or exc}") from None
    try:
        data = toml_text.loads(text)
    except toml_text.TOMLDecodeError as exc:  # an integer past 4300 digits too (found in audit: a traceback)
        raise ServerConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return server_config_from_mapping(data, dictionary, path.parent)
    except ServerConfigError as exc:
        raise ServerConfigError(f"{path}: {exc}") from None
