"""The agent's configuration file (TOML), validated at start with errors that name the key.

Example (every key optional except where noted)::

    [link]
    url = "zmq://127.0.0.1:5550"        # or "serial:///dev/ttyTHS1?baud=115200"

    [hal]
    backend = "jetson"                   # jetson | linux | sim
    board = "orin_nx_16gb"               # profile in flight/hal/boards/; jetson detects it if absent
    sim_endpoint = "tcp://10.0.0.2:5560" # sim only: the harness
    lockstep = true                      # sim only: time stepped by the harness
    root = "/"                           # jetson/linux: filesystem root (fake trees in tests)
    nvpmodel = "nvpmodel"                # jetson: the nvpmodel executable

    [rates]
    hk_period_s = 1.0
    control_period_s = 1.0

    [power]
    battery_capacity_wh = 100.0
    platform_load_w = 12.0               # the rest of the spacecraft, without the board
    bench_supply = false                 # true on a desk: no EPS and no battery, mains power;
                                         # compute is admitted in full and telemetry says why

    [orbit]
    tle = ["1 25544U ...", "2 25544 ..."]

    [array]                              # the solar arrays, as the agent believes them (optional:
                                         # without it the plan treats sunlight as power)
    pointing = "body_fixed"              # sun_tracking | body_fixed
    attitude = "nadir"                   # nadir | sun | inertial (body_fixed only)
    efficiency = 0.28
    degradation_per_year = 0.01
    years = 1.0
    panels = [{normal = [1.0, 0.0, 0.0], area_m2 = 0.3}]   # normals in the body frame

    [paths]
    state_dir = "/var/lib/sunlit"        # parameters, counters, orbit: survive restarts

    [compute]
    enabled = true                       # the compute worker; default: on, except in lockstep HIL
    dir = "/var/lib/sunlit/compute"      # models, data sets, products, checkpoints (default STATE_DIR/compute)
    upset_injection = false              # HIL only: the worker takes the harness's upsets into memory
                                         # (flight/compute/inject.py); never on a board
    gpu_tf32 = false                     # true: the GPU may round Conv/GEMM operands to TF32 (faster;
                                         # the checksum pass then catches fewer faults: tf32 tolerance)

    [models]                             # who may uplink models (flight/compute/package.py)
    trusted_keys = "/etc/sunlit/operators.keys"  # a file of 'operator-name hex-public-key' lines, or a
                                         # directory of *.pub files; none: signed models are refused
    allow_unsigned = false               # true: MODEL_INSTALL also takes a bare NAME.onnx on its SHA-256
                                         # (bench and tests; never on a flight board)

    [security]                           # authenticated telecommands (flight/link/sdls.py)
    tc_keys = "/etc/sunlit/keys/tc.keys" # key slots, 'SPI HEX-KEY [active|revoked|master|telemetry]'
                                         # lines, mode 600; every telecommand must then carry a valid
                                         # MAC (none: not checked); KEY_LOAD/KEY_REVOKE change them
    tm_auth = false                      # true: every telemetry packet leaves sealed with the
                                         # 'telemetry' slot of tc_keys (the ground: [[spacecraft]] tm_auth)
    zmq_curve = "auto"                   # CurveZMQ on the ZeroMQ link (flight/link/curve.py): auto | on | off;
                                         # auto: on unless the link is zmq+ipc or on a loopback host
                                         # (127.0.0.0/8, ::1, localhost); serial links ignore it
    zmq_server_secret = "/etc/sunlit/keys/zmq/agent.key_secret"  # the agent's certificate (pyzmq's
                                         # zmq.auth format, mode 600); required when CURVE is on
    zmq_clients = "/etc/sunlit/keys/zmq/clients"  # the allow-list: the grounds' public certificates
                                         # (*.key); only these connect; required when CURVE is on

    [store]                              # the on-board packet store (flight/agent/tm_store.py)
    dir = "/var/lib/sunlit/store"        # default STATE_DIR/store
    max_mb = 64                          # its size; past it the oldest housekeeping goes first
    fsync = "auto"                       # thread | loop | auto: the segments' fsync in a thread of its
                                         # own (the loop never waits on their flush) or in the loop; auto:
                                         # a thread where the agent may run on 4 or more CPUs

    [[stations]]                         # ground stations, for the pass prediction (any number)
    name = "svalbard"
    lat_deg = 78.23
    lon_deg = 15.39
    alt_m = 500.0
    min_elevation_deg = 5.0              # the elevation mask

    [parameters]                         # start-up values for dictionary parameters
    battery_floor_pct = 35.0

Parameters saved by command (SAVE_PARAMS) override ``[parameters]``, which override the
dictionary's defaults. ``[parameters]`` keeps the dictionary's rules between parameters
(``ORDERED_PARAMETERS``: the soft thermal limit below the hard one, the SAFE charge below the floor,
against the default of the one not set); a saved value that breaks one against it gives way, said at boot.
The hard thermal limit stays below the board profile's ``hard_temp_c`` (:func:`check_board_limits`).

A relative path (``state_dir``, the ``dir`` of ``[compute]`` and ``[store]``, the key files, ``[hal] root``) is
taken from the directory the agent is started in, not from this file's folder (the SAFE unit runs a copy of
this file from /run/sunlit): the units start it in /var/lib/sunlit (``WorkingDirectory``) and install.sh writes
absolute paths; write yours absolute too. Without ``[paths]`` the state is kept in ``var/sunlit`` there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flight import toml_text
from flight.hal.base import BACKENDS, BoardOptions
from flight.link.definitions import DICTIONARY, ORDERED_PARAMETERS
from flight.link.dictionary import ArgumentError
from flight.link.interface import IPC_PATH_MAX_BYTES, LinkConfigError, parse_link_url
from flight.storage import ReadRefused, read_file_or_pipe


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file and the key."""


STORE_FSYNC = ("auto", "thread", "loop")
"""[store] fsync: where the packet store's segments are fsynced (flight/agent/tm_store.py: BackgroundSync)."""

_NUM = (int, float)
# section -> key -> (accepted types, default); None default means "required if the section is used"
_SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], Any]]] = {
    "link": {"url": ((str,), "zmq://127.0.0.1:5550")},
    "hal": {
        "backend": ((str,), "linux"),
        "board": ((str,), None),
        "sim_endpoint": ((str,), "tcp://127.0.0.1:5560"),
        "lockstep": ((bool,), True),
        "root": ((str,), "/"),
        "nvpmodel": ((str,), "nvpmodel"),
    },
    "rates": {"hk_period_s": (_NUM, 1.0), "control_period_s": (_NUM, 1.0)},
    "power": {"battery_capacity_wh": (_NUM, 100.0), "platform_load_w": (_NUM, 12.0), "bench_supply": ((bool,), False)},
    "orbit": {"tle": ((list,), None)},
    "array": {"pointing": ((str,), "sun_tracking"), "attitude": ((str,), "nadir"), "efficiency": (_NUM, None),
              "degradation_per_year": (_NUM, 0.0), "years": (_NUM, 0.0), "temp_coeff_per_c": (_NUM, -0.002),
              "panels": ((list,), None)},
    "paths": {"state_dir": ((str,), "var/sunlit")},
    "compute": {"enabled": ((bool,), None), "dir": ((str,), None), "upset_injection": ((bool,), False),
                "gpu_tf32": ((bool,), False)},
    "store": {"dir": ((str,), None), "max_mb": (_NUM, 64), "fsync": ((str,), "auto")},
    "models": {"trusted_keys": ((str,), None), "allow_unsigned": ((bool,), False)},
    "security": {"tc_keys": ((str,), None), "tm_auth": ((bool,), False), "zmq_curve": ((str,), "auto"),
                 "zmq_server_secret": ((str,), None), "zmq_clients": ((str,), None)},
}


@dataclass(frozen=True)
class Config:
    link_url: str = "zmq://127.0.0.1:5550"
    hal_backend: str = "linux"
    board: str | None = None  # None: detect (jetson), the default profile (sim), none (linux: the PC's own)
    sim_endpoint: str = "tcp://127.0.0.1:5560"
    lockstep: bool = True
    hal_root: str = "/"
    nvpmodel: str = "nvpmodel"
    hk_period_s: float = 1.0
    control_period_s: float = 1.0
    battery_capacity_wh: float = 100.0
    platform_load_w: float = 12.0
    bench_supply: bool = False
    tle: tuple[str, str] | None = None
    state_dir: Path = Path("var/sunlit")
    parameters: dict[str, Any] = field(default_factory=dict)
    compute_enabled: bool | None = None  # None: on unless lockstep HIL (compute is modelled there)
    compute_dir: Path | None = None
    compute_upset_injection: bool = False  # [compute] upset_injection: HIL only (flight/compute/inject.py)
    compute_gpu_tf32: bool = False  # [compute] gpu_tf32: the worker's GPU libraries may use TF32 (providers.py)
    array: Any = None  # flight.power.array.ArrayModel, or None: no [array] section
    store_dir: Path | None = None  # None: STATE_DIR/store
    store_max_mb: float = 64.0
    store_fsync: str = "auto"  # [store] fsync: thread | loop | auto (flight/agent/tm_store.py: BackgroundSync)
    stations: tuple = ()  # flight.orbit.passes.Station, from [[stations]]
    trusted_keys: Path | None = None  # [models]: the operators' public keys; None: signed models refused
    allow_unsigned_models: bool = False  # [models] allow_unsigned
    tc_keys: Path | None = None  # [security]: the telecommand key slots; None: telecommands are not authenticated
    tm_auth: bool = False  # [security]: seal every telemetry packet with tc_keys' telemetry slot
    zmq_curve: str = "auto"  # [security]: CurveZMQ on a ZeroMQ link: auto | on | off (flight/link/curve.py)
    zmq_server_secret: Path | None = None  # [security]: the agent's secret certificate (CURVE on)
    zmq_clients: Path | None = None  # [security]: the directory of allowed clients' certificates (CURVE on)
    source: str = "(defaults)"

    @property
    def curve_on(self) -> bool:
        """Whether the link runs CurveZMQ (``zmq_curve``, with "auto" decided by the link URL)."""
        from flight.link.curve import curve_wanted

        return curve_wanted(self.link_url, self.zmq_curve)

    def link_curve(self) -> Any:
        """The agent's CURVE keys for ``open_flight_link`` (a CurveKeys), or None when CURVE is off."""
        if not self.curve_on:
            return None
        from flight.link.curve import server_keys

        return server_keys(self.zmq_server_secret, self.zmq_clients)

    @property
    def board_said(self) -> str:
        """The board profile as the agent's start and selftest say it, where none is named."""
        if self.board:
            return self.board
        return {"jetson": "detect from the device tree", "sim": "the sim backend's default",
                "linux": "none (this computer's own sensors)"}.get(self.hal_backend, "default")

    def board_options(self) -> BoardOptions:
        """What the hardware backend is told (the [hal] section)."""
        return BoardOptions(board=self.board, root=self.hal_root, nvpmodel=self.nvpmodel,
                            sim_endpoint=self.sim_endpoint, lockstep=self.lockstep)


def load_config(path: Path | str | None, overrides: dict[str, Any] | None = None,
                flags: dict[str, str] | None = None) -> Config:
    """Read and check a config file (or defaults for None); ``overrides`` win (command-line flags;
    ``flags`` names each key's flag, for an error in a value one gave)."""
    if path is None:
        raw: dict[str, Any] = {}
        source = "(defaults)"
    else:
        path = Path(path)
        source = str(path)
        try:
            raw = toml_text.loads(_read_config_text(path))
            if not raw:  # found in audit: an edit cut short (empty, or the file's first comments alone) ran the agent
                # on defaults (the linux backend on a Jetson, no telecommand keys, state in a relative folder)
                raise ConfigError(f"{path}: empty or comments only (an edit or a copy cut short?): write its settings "
                                  "(an installed board keeps its default in /opt/sunlit/share/agent.default.toml), or "
                                  "start without --config for the built-in defaults")
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such configuration file") from None
        except OSError as exc:  # permission denied (/etc/sunlit is root:sunlit 0750), a directory
            raise ConfigError(f"{path}: cannot read it as uid {os.geteuid()}: {exc.strerror}") from None
        except (toml_text.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, source, overrides or {}, flags)


MAX_CONFIG_BYTES = 1024 * 1024
"""The most a configuration file may hold: a full one, stations and comments included, is a few KiB."""


def _read_config_text(path: Path) -> str:
    """The file's text, read from a regular file or a pipe (``--config <(...)``), and only up to
    :data:`MAX_CONFIG_BYTES` (found in audit: ``--config /dev/zero`` ended in a MemoryError traceback, and a
    named pipe no one writes hung the start for good)."""
    try:
        data = read_file_or_pipe(path, MAX_CONFIG_BYTES)
    except ReadRefused as exc:
        why = {"type": "give the configuration file itself", "empty": "start what writes it first, or give a file",
               "limit": "no configuration is that long: is it the right file?"}[exc.kind]
        raise ConfigError(f"{path}: {exc}: {why}") from None
    # utf-8-sig: the byte-order mark an editor on Windows puts first is no part of the TOML (found in audit: such a
    # file was refused as "Invalid statement (at line 1, column 1)", nothing wrong to be seen in it)
    return data.decode("utf-8-sig")


def parse_config(raw: dict[str, Any], source: str = "(config)", overrides: dict[str, Any] | None = None,
                 flags: dict[str, str] | None = None) -> Config:
    given = {key for key, value in (overrides or {}).items() if value is not None}

    def fail(key: str, message: str, in_file: bool = False) -> ConfigError:
        """``in_file``: the file's own value is at fault, whatever a flag gives for the key."""
        if key in given and not in_file:  # the command line's value (found in use: "(defaults): rates...")
            return ConfigError(f"{(flags or {}).get(key, 'the command line')} ({key}): {message}")
        return ConfigError(f"{source}: [{key}] {message}" if "." not in key else f"{source}: {key}: {message}")

    def huge(value: Any, where: str) -> None:  # anywhere in the file, nested tables too (found in review: [array]
        if isinstance(value, dict):                # panels and [[stations]] raised OverflowError tracebacks)
            for k, v in value.items():
                huge(v, f"{where}.{k}" if where else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                huge(v, f"{where}[{i}]")
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2 ** 63:
            raise fail(where, f"{str(value)[:20]}...: past any value it takes", True)

    huge(raw, "")
    values: dict[str, Any] = {}
    for section, body in raw.items():
        if section in ("parameters", "stations"):
            continue
        if section not in _SCHEMA:
            raise fail(section, f"unknown section; known: {', '.join([*_SCHEMA, 'parameters', 'stations'])}")
        if not isinstance(body, dict):
            raise fail(section, "must be a table")
        for key, value in body.items():
            if key not in _SCHEMA[section]:
                raise fail(f"{section}.{key}", f"unknown key; [{section}] takes {', '.join(_SCHEMA[section])}", True)
            types, _default = _SCHEMA[section][key]
            if isinstance(value, bool) and bool not in types or not isinstance(value, types):
                raise fail(f"{section}.{key}", f"expected {' or '.join(t.__name__ for t in types)}, got "
                                               f"{type(value).__name__} {str(value)[:40]!r}", True)
            values[f"{section}.{key}"] = value
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    for key, value in values.items():  # TOML's \u0000 (found in audit: "embedded null byte" from the backend's open,
        if isinstance(value, str) and "\x00" in value:  # naming no key, and a ValueError each tick from nvpmodel)
            raise fail(key, f"{value[:40]!r} holds a NUL byte: no path, program, URL or name has one")

    def get(key: str) -> Any:
        section, name = key.split(".")
        return values.get(key, _SCHEMA[section][name][1])

    url = get("link.url")
    try:
        parse_link_url(url)
    except LinkConfigError as exc:
        raise fail("link.url", str(exc)) from None
    for key in ("paths.state_dir", "hal.root"):  # found in audit: --state-dir "" (an unset shell variable) kept the
        if not str(get(key)).strip():          # agent's state in whatever directory it was started from, said "."
            raise fail(key, "empty or blank: give a directory (an empty path is the working directory)")
    backend = get("hal.backend")
    endpoint = get("hal.sim_endpoint")
    if backend == "sim" and not _is_sim_endpoint(endpoint):  # found in audit: a ZMQError traceback at start
        raise fail("hal.sim_endpoint", f"{str(endpoint)[:80]!r} is no ZeroMQ endpoint (tcp://HOST:PORT, ipc://PATH)")
    if backend not in BACKENDS:
        raise fail("hal.backend", f"{backend!r} is not one of {', '.join(sorted(BACKENDS))}")
    board = get("hal.board")
    if board:  # checked here, so the error names the key (the backends check it again as they open it); "": none
        from flight.hal.boards import available_boards

        if board not in available_boards():
            raise fail("hal.board", f"no board profile {board!r}: shipped profiles are {', '.join(available_boards())}")
    if get("compute.upset_injection") and backend != "sim":
        raise fail("compute.upset_injection", "HIL only: the harness's upsets into the worker's memory are taken "
                                              "only with [hal] backend = \"sim\", never on a board")
    for key in ("rates.hk_period_s", "rates.control_period_s"):
        if not 0.01 <= float(get(key)) <= 3600:
            raise fail(key, f"{get(key)} s is outside 0.01..3600 s")
    try:  # the parameter's start-up value (agent.py), so in its range (found in audit: --hk-period 0.05 was taken,
        # below the 0.1 s that SET_PARAM and [parameters] hold hk_period_s to)
        DICTIONARY.parameter_by_name["hk_period_s"].spec.coerce(float(get("rates.hk_period_s")), "hk_period_s")
    except ArgumentError as exc:
        raise fail("rates.hk_period_s", f"{exc} (the dictionary's range of the parameter it starts)") from None
    # Finite (TOML reads inf and nan; an audit: capacity inf admitted everything, "keeps nan %")
    if not 0.1 <= float(get("power.battery_capacity_wh")) <= 1e6:
        raise fail("power.battery_capacity_wh", f"{get('power.battery_capacity_wh')} Wh is outside 0.1..1e6 Wh")
    if not 0.0 <= float(get("power.platform_load_w")) <= 1e5:
        raise fail("power.platform_load_w", f"{get('power.platform_load_w')} W is outside 0..1e5 W")
    tle = get("orbit.tle")
    if tle is not None:
        if len(tle) != 2 or not all(isinstance(line, str) for line in tle):
            raise fail("orbit.tle", "must be two strings, the TLE's line 1 and line 2")
        from flight.orbit import Orbit, TleError

        try:
            Orbit.from_tle(tle[0], tle[1])
        except TleError as exc:
            raise fail("orbit.tle", str(exc)) from None
        tle = (tle[0], tle[1])

    array = _array(values, fail) if any(k.startswith("array.") for k in values) else None
    store_max_mb = float(get("store.max_mb"))
    if not 1.0 <= store_max_mb <= 1_000_000.0:
        raise fail("store.max_mb", f"{store_max_mb} MB is outside 1..1000000 (four segments of 256 KiB at least)")
    if get("store.fsync") not in STORE_FSYNC:
        raise fail("store.fsync", f"{get('store.fsync')!r} is not one of {', '.join(STORE_FSYNC)}")

    from flight.orbit.passes import StationError, parse_stations

    try:
        stations = parse_stations(raw.get("stations", []))
    except StationError as exc:
        raise ConfigError(f"{source}: {exc}") from None

    trusted_keys = get("models.trusted_keys")
    if trusted_keys is not None:
        from flight.compute.package import KeyFileError, load_trusted_keys

        try:
            load_trusted_keys(trusted_keys)
        except KeyFileError as exc:
            raise fail("models.trusted_keys", str(exc)) from None

    tc_keys = get("security.tc_keys")
    if tc_keys is not None:
        from flight.link.sdls import KeyFileError as TcKeyError, KeyRing

        try:
            ring = KeyRing.load(tc_keys)
        except TcKeyError as exc:
            raise fail("security.tc_keys", str(exc)) from None
        if get("security.tm_auth") and ring.telemetry_slot() is None:
            raise fail("security.tm_auth", f"true, but {tc_keys} has no telemetry slot ('SPI HEX telemetry')")
    elif get("security.tm_auth"):
        raise fail("security.tm_auth", "true needs security.tc_keys (the telemetry slot is one of its keys)")

    zmq_curve = get("security.zmq_curve")
    zmq_server_secret, zmq_clients = get("security.zmq_server_secret"), get("security.zmq_clients")
    from flight.link.curve import CURVE_SETTINGS, MAKE_KEYS_HINT, CurveKeyError, curve_wanted, load_allowed, load_secret

    if zmq_curve not in CURVE_SETTINGS:
        raise fail("security.zmq_curve", f"{zmq_curve!r} is not one of {', '.join(CURVE_SETTINGS)}")
    if curve_wanted(url, zmq_curve):
        why = "zmq_curve is on" if zmq_curve == "on" else f"zmq_curve is auto and {url} is not loopback or ipc"
        for key, value, check in (("security.zmq_server_secret", zmq_server_secret, load_secret),
                                  ("security.zmq_clients", zmq_clients, load_allowed)):
            if value is None:
                raise fail(key, f"required: {why}; {MAKE_KEYS_HINT} (or set zmq_curve = \"off\")")
            try:
                check(value)
            except CurveKeyError as exc:
                raise fail(key, str(exc)) from None

    params = raw.get("parameters", {})
    if not isinstance(params, dict):
        raise fail("parameters", "must be a table")
    checked: dict[str, Any] = {}
    for name, value in params.items():
        param = DICTIONARY.parameter_by_name.get(name)
        if param is None:
            raise fail(f"parameters.{name}", f"no such parameter; known: {', '.join(DICTIONARY.parameter_by_name)}")
        try:
            checked[name] = param.spec.coerce(value, name)
        except ArgumentError as exc:
            raise fail(f"parameters.{name}", str(exc)) from None
    for lower, upper, why in ORDERED_PARAMETERS:  # against the default where only one of the pair is set
        low, high = (checked.get(n, DICTIONARY.parameter_by_name[n].default) for n in (lower, upper))
        if (lower in checked or upper in checked) and not low < high:
            raise fail(f"parameters.{lower if lower in checked else upper}",
                       f"{why} ({lower} {low:g}, {upper} {high:g})")

    config = Config(
        link_url=url,
        hal_backend=backend,
        board=get("hal.board"),
        sim_endpoint=get("hal.sim_endpoint"),
        lockstep=get("hal.lockstep"),
        hal_root=get("hal.root"),
        nvpmodel=get("hal.nvpmodel"),
        hk_period_s=float(get("rates.hk_period_s")),
        control_period_s=float(get("rates.control_period_s")),
        battery_capacity_wh=float(get("power.battery_capacity_wh")),
        platform_load_w=float(get("power.platform_load_w")),
        bench_supply=get("power.bench_supply"),
        tle=tle,
        state_dir=Path(get("paths.state_dir")),
        parameters=checked,
        compute_enabled=get("compute.enabled"),
        compute_dir=Path(get("compute.dir")) if get("compute.dir") else None,
        compute_upset_injection=get("compute.upset_injection"),
        compute_gpu_tf32=get("compute.gpu_tf32"),
        array=array,
        store_dir=Path(get("store.dir")) if get("store.dir") else None,
        store_max_mb=store_max_mb,
        store_fsync=get("store.fsync"),
        stations=stations,
        trusted_keys=Path(trusted_keys) if trusted_keys is not None else None,
        allow_unsigned_models=get("models.allow_unsigned"),
        tc_keys=Path(tc_keys) if tc_keys is not None else None,
        tm_auth=get("security.tm_auth"),
        zmq_curve=zmq_curve,
        zmq_server_secret=Path(zmq_server_secret) if zmq_server_secret is not None else None,
        zmq_clients=Path(zmq_clients) if zmq_clients is not None else None,
        source=source,
    )
    if board:  # a detected profile (jetson) or the sim's default is checked as the agent opens its board
        from flight.hal.boards import load_board

        check_board_limits(config, load_board(board), "named by hal.board")
    return config


def _is_sim_endpoint(endpoint: Any) -> bool:
    """Whether the harness's endpoint is one a DEALER can connect to: tcp://HOST:PORT (PORT 1..65535, no
    wildcard host), ipc://PATH that fits a Unix socket, or inproc://NAME (found in audit: tcp://10.0.0.2, its port
    forgotten, passed here and raised a ZMQError traceback as the agent started)."""
    if not isinstance(endpoint, str):
        return False
    scheme, _, rest = endpoint.partition("://")
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        return (bool(host) and host != "*" and not any(c.isspace() or c == "/" for c in host)
                and port.isascii() and port.isdigit() and 1 <= int(port) <= 65535)
    if scheme == "ipc":
        return bool(rest) and len(rest.encode()) <= IPC_PATH_MAX_BYTES
    return scheme == "inproc" and bool(rest)


def check_board_limits(config: Config, profile: Any, said: str) -> None:
    """ConfigError unless the agent's thermal hard limit is below the board profile's ``hard_temp_c``, where
    the board shuts itself down: above it the agent never gets to go SAFE first (found in audit: 110 C on an
    Orin Nano, whose profile shuts down at 97 C, was accepted). Equal is refused too: the agent would act on
    the reading the board switches off at. ``said``: where the profile came from ("named by hal.board")."""
    problem = board_limit_problem(config.parameters, profile, said)
    if problem is not None:
        raise ConfigError(f"{config.source}: parameters.{problem[0]}: {problem[1]}")


def board_limit_problem(parameters: dict[str, Any], profile: Any, said: str,
                        advice: str = "set [parameters] {name} below it") -> tuple[str, str] | None:
    """(parameter, why) where ``parameters`` (those set; the dictionary's defaults for the rest) break the
    board profile's bounds, else None: the rule of :func:`check_board_limits`, for the HIL's scenarios, and
    for SET_PARAM and saved values in the agent's parameter store. ``advice``: what to do, ``{name}`` the
    parameter's."""
    name = "thermal_hard_limit_c"
    hard_c = float(parameters.get(name, DICTIONARY.parameter_by_name[name].default))
    shutdown_c = profile.thermal.hard_temp_c
    if hard_c < shutdown_c:
        return None
    value = f"{hard_c:g} C" + ("" if name in parameters else " (the dictionary's default)")
    return name, (f"{value} is not below the {profile.id} profile's hard_temp_c {shutdown_c:g} C (profile {said}), "
                  f"where the board shuts itself down; {advice.format(name=name)}, so the agent goes SAFE first")


def _array(values: dict[str, Any], fail) -> Any:
    """The [array] section as an ArrayModel; every error names its key."""
    from flight.power.array import ArrayModel, Panel

    for key in ("efficiency", "panels"):
        if f"array.{key}" not in values:
            raise fail(f"array.{key}", "required when [array] is given")
    panels = []
    for i, entry in enumerate(values["array.panels"]):
        where = f"array.panels[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"normal", "area_m2"}:
            raise fail(where, "must be {normal = [x, y, z], area_m2 = A}")
        normal, area = entry["normal"], entry["area_m2"]
        if not isinstance(normal, list) or len(normal) != 3 or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in normal):
            raise fail(f"{where}.normal", "three numbers, in the body frame")
        if isinstance(area, bool) or not isinstance(area, (int, float)):
            raise fail(f"{where}.area_m2", "a number")
        panels.append(Panel(tuple(float(x) for x in normal), float(area)))
    try:
        return ArrayModel(tuple(panels), float(values["array.efficiency"]),
                          values.get("array.pointing", "sun_tracking"), values.get("array.attitude", "nadir"),
                          float(values.get("array.degradation_per_year", 0.0)), float(values.get("array.years", 0.0)),
                          float(values.get("array.temp_coeff_per_c", -0.002)))
    except ValueError as exc:
        key = str(exc).split(":", 1)[0].replace("normal_body", "normal")
        raise fail(f"array.{key}", str(exc).split(": ", 1)[-1]) from None
