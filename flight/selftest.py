"""``sunlit-flight selftest``: is this board, this install and this configuration ready to fly?

Run it on the board after deploy/install.sh, as the service user, so it sees what the agent
will see::

    sudo -u sunlit /opt/sunlit/venv/bin/sunlit-flight selftest --config /etc/sunlit/agent.toml
    sudo -u sunlit /opt/sunlit/venv/bin/python -m flight.selftest --json     # for machines

Each check gives one or more rows of PASS, WARN, FAIL or SKIP with a reason; the test passes
when no row FAILs (exit status 0; 1 on a failure, 2 for a configuration that cannot be
read). What is checked, in order:

- ``config``: the file parses and names a backend, link and state directory; ``zmq curve``: a
  ZeroMQ link other hosts may reach with ``zmq_curve = "off"`` is a warning, as the agent says at start;
- ``onnxruntime`` / ``cuda`` / ``tensorrt``: the execution providers of the installed build;
  a tiny model built in memory (onnx.helper) runs on the CPU and, where CUDA is listed, on
  CUDA with the same answer. A CPU-only build passes, except that on a Jetson it warns: the
  generic builds have no CUDA for Jetson (FACTS.md "Jetson interfaces");
- ``temperatures``, ``rails``, ``board power``, one row per unreadable sensor: every sensor
  the board profile expects reads, within :data:`PLAUSIBLE_TEMP_C` (its ends excluded, and
  below the profile's shutdown temperature), :data:`PLAUSIBLE_RAIL_W` and
  :data:`PLAUSIBLE_RAIL_V`, through the configured HAL backend;
- ``power modes``: jetson: /etc/nvpmodel.conf parses and ``nvpmodel -q`` names one of its
  modes; ``power control``: the files nvpmodel writes are writable by this user;
- ``link``: zmq: the agent's sockets can be bound, or an agent already bound there answers
  a PUS ping (17,1); serial: the device exists and opens;
- ``disk``: the state directory's file system has ``min_free_mb`` free;
- ``model store``: every model of the working and golden copies matches its SHA-256
  (:meth:`flight.compute.store.ModelStore.verify_all`) and the golden copy is there;
- ``telecommand keys``: the key file of ``[security] tc_keys`` (or ``--key``) exists, is mode
  0600, parses (flight/link/sdls.py) with an active slot and no all-zero key; no master slot
  (no rotation by command) is a warning.

Nothing here changes the board: no power mode is set, no file is written (a bound socket
is closed at once, and a live ipc socket is pinged, never bound over: ZeroMQ would take its
path from the agent), the serial port is opened and closed without a byte sent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import stat
import sys
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Sequence

from flight.config import Config, ConfigError, board_limit_problem, load_config
from flight.hal.base import Board, open_board
from flight.storage import printable

DEFAULT_CONFIG = Path("/etc/sunlit/agent.toml")
DEFAULT_KEY_PATH = Path("/etc/sunlit/keys/tc.keys")  # where deploy/install.sh provisions them
DEFAULT_MIN_FREE_MB = 100.0

# Plausible values of a board that runs. Temperatures: the range industrial parts are
# specified for, its ends excluded: -40 and 125 C are where a sensor saturates, the classic
# stuck readings. An Orin shuts down at 104.5 C (FACTS.md "Throttling"), so with a board
# profile a zone at or above its hard_temp_c is a stuck sensor too, not a hot board. Rails:
# the INA3221 bus voltages (FACTS.md "Power rails") are the module's 5 V input and rails down
# to AGX Orin's 1.8 V VDDQ_VDD2_1V8AO; a carrier measuring its DC jack sees up to 20 V; below
# 1 V the channel is dead. 100 W is above any Orin module's 60 W.
PLAUSIBLE_TEMP_C = (-40.0, 125.0)
PLAUSIBLE_RAIL_W = (0.0, 100.0)
PLAUSIBLE_RAIL_V = (1.0, 30.0)

# Missing sensors that are known not to mean a broken board: tj-thermal reads empty on
# some Orin Nano/NX carrier boards (FACTS.md "Jetson interfaces").
_BENIGN_MISSING = (re.compile(r"^tj-thermal: read empty"),)
_SECOND_SAMPLE_S = 0.25  # between the two reads that give CPU load (and RAPL power on a PC)
PING_TIMEOUT_S = 2.0


class Status(str, Enum):
    PASS = "PASS"
    WARN = "WARN"  # works, but look at it: the check could not be sure, or a known weakness
    FAIL = "FAIL"
    SKIP = "SKIP"  # does not apply to this configuration


@dataclass(frozen=True)
class Check:
    """One row of the report. ``data`` holds the numbers behind ``detail`` for ``--json``."""

    name: str
    status: Status
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "status": self.status.value, "detail": self.detail, "data": self.data}


@dataclass(frozen=True)
class SelftestReport:
    rows: tuple[Check, ...]
    config_source: str
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        """True when no row failed (warnings and skips do not fail the test)."""
        return not any(row.status is Status.FAIL for row in self.rows)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(row for row in self.rows if row.status is Status.FAIL)

    def counts(self) -> dict[str, int]:
        return {s.value: sum(row.status is s for row in self.rows) for s in Status}

    def table(self) -> str:
        """The report as a fixed-width table with a verdict line, for people."""
        name_w = max([len("CHECK"), *(len(printable(r.name)) for r in self.rows)])
        lines = [f"sunlit selftest: {self.config_source}", "", f"{'CHECK':<{name_w}}  RESULT  DETAIL"]
        for row in self.rows:  # names and values read from sysfs and files escaped (found in audit: a zone's type
            # with an escape sequence reached the terminal as one, a newline in it forged a line)
            detail = printable(row.detail).splitlines() or [""]
            lines.append(f"{printable(row.name):<{name_w}}  {row.status.value:<6}  {detail[0]}")
            lines += [f"{'':<{name_w}}  {'':<6}  {more}" for more in detail[1:]]
        c = self.counts()
        verdict = "PASS" if self.passed else "FAIL"
        lines += ["", f"selftest {verdict}: {c['PASS']} passed, {c['WARN']} warnings, {c['FAIL']} failed, "
                      f"{c['SKIP']} skipped ({self.duration_s:.1f} s)"]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "config": self.config_source,
            "counts": self.counts(),
            "duration_s": round(self.duration_s, 3),
            "rows": [row.to_json() for row in self.rows],
        }


# --- the test model -------------------------------------------------------------------------

_TEST_W = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.5], [-2.0, 1.0, 0.75], [0.125, -0.25, 1.0]]
_TEST_X = [[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0]]


def tiny_model_bytes() -> bytes:
    """A two-node ONNX model, ``y = relu(x @ w)`` with x float[N,4], built in memory.

    Opset 13 and IR version 8, so any onnxruntime since 1.10 (older Jetson wheels) loads it.
    """
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], [v for row in _TEST_W for v in row])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Relu", ["xw"], ["y"])],
        "sunlit_selftest",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="sunlit-selftest")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _run_test_model(model: bytes, provider: str) -> tuple[str, float, list[str]]:
    """Run the test model asking for ``provider`` first: (provider used, max abs error, fallbacks)."""
    import numpy as np

    from flight.compute.providers import open_session

    session, used, fallbacks = open_session(model, [provider], threads=1)
    x = np.array(_TEST_X, dtype=np.float32)
    (y,) = session.run(["y"], {"x": x})
    expected = np.maximum(x @ np.array(_TEST_W, dtype=np.float32), 0.0)
    return used, float(np.max(np.abs(y - expected))), fallbacks


# --- checks ---------------------------------------------------------------------------------


def _check_config(config: Config) -> list[Check]:
    board = config.board_said
    compute = {None: "on", True: "on", False: "off"}[config.compute_enabled]
    return [Check("config", Status.PASS,
                  f"{config.source}: link {config.link_url}, hal {config.hal_backend}, board {board}, "
                  f"state {config.state_dir}, compute {compute}",
                  {"source": config.source, "link": config.link_url, "hal": config.hal_backend,
                   "board": config.board, "state_dir": str(config.state_dir)})] + _check_curve(config)


def _check_curve(config: Config) -> list[Check]:
    """A plain ZeroMQ link other hosts may reach: allowed (a bench), said at start on the agent's console, and here
    (found in audit: the selftest passed it without a word, and a console is not always read)."""
    from flight.link.curve import plain_off_board

    if not plain_off_board(config.link_url, config.zmq_curve):
        return []
    reach = ("can command this agent (no [security] tc_keys either)" if config.tc_keys is None else
             "can send to it (telecommands still need a MAC from [security] tc_keys)")
    return [Check("zmq curve", Status.WARN,
                  f"link {config.link_url} is plain ZeroMQ (security.zmq_curve = \"off\") on an address other hosts "
                  f"may reach: any host that reaches its ports reads the telemetry and {reach}; set zmq_curve = "
                  "\"auto\" with zmq_server_secret and zmq_clients, or bind to 127.0.0.1",
                  {"link": config.link_url, "zmq_curve": config.zmq_curve, "tc_keys": config.tc_keys is not None})]


def _check_providers(config: Config, on_jetson: bool) -> list[Check]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return [Check("onnxruntime", Status.FAIL, f"cannot import onnxruntime: {exc}; re-run deploy/install.sh")]
    from flight.compute.providers import CPU, CUDA, TENSORRT

    available = list(ort.get_available_providers())
    rows: list[Check] = []
    data = {"version": ort.__version__, "providers": available, "device": ort.get_device()}
    model = tiny_model_bytes()
    used, error, fallbacks = _run_test_model(model, CPU)
    if used == CPU and error < 1e-5:
        rows.append(Check("onnxruntime", Status.PASS,
                          f"onnxruntime {ort.__version__}, providers {', '.join(available)}; "
                          f"the test model ran on the CPU", {**data, "cpu_max_error": error}))
    else:
        rows.append(Check("onnxruntime", Status.FAIL,
                          f"the test model on the CPU: provider {used}, max error {error:g} ({'; '.join(fallbacks)})",
                          {**data, "cpu_max_error": error}))
    if CUDA in available:
        try:
            used, error, fallbacks = _run_test_model(model, CUDA)
        except Exception as exc:  # noqa: BLE001 - a broken GPU stack raises anything; report it
            used, error, fallbacks = "none", float("nan"), [f"{type(exc).__name__}: {exc}"]
        if used == CUDA and error < 1e-4:
            rows.append(Check("cuda", Status.PASS, f"CUDA ran the test model (max error {error:.1e})",
                              {"max_error": error}))
        else:
            why = "; ".join(fallbacks) or f"max error {error:g}"
            rows.append(Check("cuda", Status.FAIL,
                              f"CUDA is listed but did not run the test model (ran on {used}): {why}",
                              {"provider": used, "fallbacks": fallbacks}))
    elif on_jetson:
        rows.append(Check("cuda", Status.WARN,
                          "CPU-only onnxruntime on a Jetson: inference will not use the GPU. Install NVIDIA's "
                          "Jetson wheel (deploy/install.sh --ort-wheel/--ort-index; the generic PyPI "
                          "onnxruntime-gpu has no CUDA for Jetson)"))
    else:
        rows.append(Check("cuda", Status.PASS, "not in this build: the CPU runs the models", {}))
    if TENSORRT in available:
        rows.append(Check("tensorrt", Status.SKIP,
                          "listed, not exercised: building an engine takes minutes; the agent falls back to "
                          "CUDA and says so if it fails"))
    return rows


def _missing_key(text: str) -> str:
    return text.split(":", 1)[0].strip() or text


def _check_sensors(board: Board) -> list[Check]:
    from flight.hal.base import HalError, SensorSet

    if board.simulated:
        return [Check("sensors", Status.SKIP, f"{board.backend} backend: readings come from the HIL harness")]
    strict = board.sensors is SensorSet.KNOWN  # a PC's sensors are whatever it has; a Jetson's are known
    hal = board.hal
    try:
        first = hal.read()
        time.sleep(_SECOND_SAMPLE_S)
        reading = hal.read()
    except (HalError, OSError, ValueError) as exc:
        return [Check("sensors", Status.FAIL, f"reading the {board.backend} HAL failed: {exc}")]
    rows: list[Check] = []

    temps = reading.temps_c
    # Zones powered off (an idle domain's, -256 C): said by the HAL once, as they go off, so in either read
    # (found in review: the first read's note was dropped, and such zones were in no row)
    off = sorted({n.split(":", 1)[0] for n in (*first.notes, *reading.notes) if "powered off" in n} - set(temps))
    off_text = f"; powered off (no temperature): {', '.join(off)}" if off else ""
    lo, hi = PLAUSIBLE_TEMP_C
    profile = board.profile if strict else None  # a PC's is for reference: its own sensors are not the board's
    bad_t: dict[str, str] = {}
    for z, t in temps.items():
        # Ends excluded (found in audit: zones stuck at -40 and 125 C, and 105 C on an AGX Orin, passed)
        if not lo < t < hi:
            bad_t[z] = f"{z} {t:.1f} C (plausible above {lo:g} and below {hi:g} C: at either end a sensor saturates)"
        elif profile is not None and t >= profile.thermal.hard_temp_c:
            bad_t[z] = (f"{z} {t:.1f} C (at or above {profile.thermal.hard_temp_c:g} C, the {profile.id} profile's "
                        "shutdown temperature: a stuck sensor on a board that runs)")
    if not temps:
        rows.append(Check("temperatures", Status.FAIL if strict else Status.WARN,
                          "no temperature readable: the thermal governor has nothing to act on", {}))
    elif bad_t:  # on a PC an odd zone (a fan's, an ACPI stub) is its own; on a Jetson a broken sensor
        rows.append(Check("temperatures", Status.FAIL if strict else Status.WARN,
                          "implausible: " + "; ".join(bad_t.values()), {"temps_c": temps}))
    else:
        rows.append(Check("temperatures", Status.PASS,
                          f"{len(temps)} zones, {min(temps.values()):.1f}..{max(temps.values()):.1f} C: "
                          + ", ".join(f"{z} {t:.1f}" for z, t in temps.items()) + off_text,
                          {"temps_c": temps, "zones_off": off}))

    rails = reading.rails
    problems = []
    for name, rail in rails.items():
        if not PLAUSIBLE_RAIL_W[0] <= rail.power_w <= PLAUSIBLE_RAIL_W[1]:
            problems.append(f"{name} {rail.power_w:.3f} W (plausible {PLAUSIBLE_RAIL_W[0]:g}..{PLAUSIBLE_RAIL_W[1]:g} W)")
        if rail.voltage_v is not None and not PLAUSIBLE_RAIL_V[0] <= rail.voltage_v <= PLAUSIBLE_RAIL_V[1]:
            problems.append(f"{name} {rail.voltage_v:.3f} V (plausible {PLAUSIBLE_RAIL_V[0]:g}..{PLAUSIBLE_RAIL_V[1]:g} V)")
    rail_data = {n: {"voltage_v": r.voltage_v, "current_a": r.current_a, "power_w": r.power_w} for n, r in rails.items()}
    if problems:
        rows.append(Check("rails", Status.FAIL, "implausible: " + "; ".join(problems), {"rails": rail_data}))
    elif rails:
        rows.append(Check("rails", Status.PASS, f"{len(rails)} rails: " + ", ".join(
            f"{n} {r.power_w:.2f} W" + (f" {r.voltage_v:.2f} V" if r.voltage_v is not None else "")
            for n, r in rails.items()), {"rails": rail_data}))
    else:
        rows.append(Check("rails", Status.FAIL if strict else Status.WARN, "no power rail readable", {}))

    if reading.board_power_w is not None:
        ok = PLAUSIBLE_RAIL_W[0] <= reading.board_power_w <= PLAUSIBLE_RAIL_W[1]
        rows.append(Check("board power", Status.PASS if ok else Status.FAIL,
                          f"{reading.board_power_w:.2f} W" + ("" if ok else " is implausible"),
                          {"board_power_w": reading.board_power_w, "notes": list(reading.notes)}))

    for text in reading.missing:
        key = _missing_key(text)
        if key in ("cpu_pct", "mem_pct") or any(p.match(text) for p in _BENIGN_MISSING):
            status = Status.WARN
        else:
            status = Status.FAIL if strict else Status.WARN
        if key == "board_power_w" and not strict:
            status = Status.SKIP  # a PC has no input-power sensor; the HAL says so
        rows.append(Check(f"sensor {key}", status, text, {"missing": text}))
    return rows


def _check_power(config: Config, board: Board) -> list[Check]:
    from flight.hal.base import HalError, PowerControl
    from flight.hal.sysfs import under

    if board.power_control is PowerControl.SIMULATED:
        return [Check("power modes", Status.SKIP, f"{board.backend} backend: modes come from the board profile")]
    rows: list[Check] = []
    hal = board.nvpmodel
    if hal is None:
        hal = board.hal
        modes = hal.power_modes()
        current = hal.current_power_mode()
        rows.append(Check("power modes", Status.PASS,
                          f"software modes {', '.join(m.name for m in modes)} (a PC has no nvpmodel); "
                          f"current {current.name if current else 'unknown'}",
                          {"modes": [m.name for m in modes], "current": current.name if current else None}))
        return rows
    try:
        conf = hal.nvpmodel_conf()
    except HalError as exc:
        return [Check("power modes", Status.FAIL, str(exc))]
    names = [m.name for m in conf.modes]
    if not conf.modes:
        return [Check("power modes", Status.FAIL, f"{hal.conf_path} defines no POWER_MODEL blocks")]
    try:
        current = hal.current_power_mode()
    except HalError as exc:
        rows.append(Check("power modes", Status.FAIL, f"{len(names)} modes in {hal.conf_path} "
                          f"({', '.join(names)}), but the current one is unknown: {exc}", {"modes": names}))
    else:
        rows.append(Check("power modes", Status.PASS,
                          f"current {current.name} (ID {current.id}) of {', '.join(names)} ({hal.conf_path})",
                          {"modes": names, "current": current.name, "current_id": current.id}))
    if conf.skipped:
        rows.append(Check("power modes conf", Status.WARN, "nvpmodel.conf lines skipped: " + "; ".join(conf.skipped[:5]),
                          {"skipped": list(conf.skipped)}))
    if hal.profile is not None:
        absent = [m.name for m in hal.profile.modes if m.name not in names]
        if absent:
            rows.append(Check("power modes profile", Status.WARN,
                              f"the {hal.profile.id} profile knows {', '.join(absent)}, which this nvpmodel.conf "
                              "does not offer (another JetPack release?); the agent uses the conf's modes",
                              {"absent": absent}))

    # Setting a mode runs nvpmodel as this user: it must be able to write what the conf names.
    paths = [under(Path(config.hal_root), p) for p in conf.param_paths]
    present = [p for p in paths if p.exists()]
    status_dir = under(Path(config.hal_root), "/var/lib/nvpmodel")
    targets = present + ([status_dir] if status_dir.exists() else [])
    locked = [str(p) for p in targets if not os.access(p, os.W_OK)]
    data = {"files": len(paths), "present": len(present), "not_writable": locked, "uid": os.geteuid()}
    if paths and not present:
        rows.append(Check("power control", Status.WARN,
                          f"none of the {len(paths)} files {hal.conf_path} names exists under {config.hal_root} "
                          "(a fake or partial tree, or [hal] root is wrong)", data))
    elif not locked:
        rows.append(Check("power control", Status.PASS,
                          f"nvpmodel can write the {len(present)} files its conf names"
                          + (f" ({len(paths) - len(present)} absent on this board)" if len(paths) > len(present) else ""),
                          data))
    else:
        rows.append(Check("power control", Status.WARN,
                          f"{len(locked)} of {len(targets)} files nvpmodel writes are not writable by uid "
                          f"{os.geteuid()} (first: {locked[0]}): setting a power mode would fail for this user. "
                          "The service grants its group write access at start (sunlit-power-access); "
                          "run the selftest as the service user once the agent has started", data))
    return rows


def _check_link(config: Config, check_link: bool, timeout_s: float) -> list[Check]:
    from flight.link.definitions import LinkKind
    from flight.link.transport import LinkConfigError, open_flight_link, parse_link_url

    if not check_link:
        return [Check("link", Status.SKIP, "not checked (--no-link)")]
    try:
        link = parse_link_url(config.link_url)
    except LinkConfigError as exc:
        return [Check("link", Status.FAIL, str(exc))]
    if link.kind is LinkKind.SERIAL:
        return [_check_serial(link.device, link.baud)]
    ipc_paths = [Path(e[len("ipc://"):]) for e in (link.cmd_endpoint, link.tm_endpoint) if e.startswith("ipc://")]
    if ipc_paths:
        # Never bind over a live ipc socket: ZeroMQ would take the path from the agent holding it.
        if any(_unix_listening(p) for p in ipc_paths):
            if config.curve_on:
                return [_curve_in_use(link.cmd_endpoint)]
            if _answers_ping(config.link_url, timeout_s):
                return [Check("link", Status.PASS, f"{link.cmd_endpoint} is in use by an agent that answers a "
                              "PUS ping (17,1)", {"bound": False, "agent_answers": True})]
            return [Check("link", Status.FAIL, f"{link.cmd_endpoint} is in use by something that does not answer "
                          f"a PUS ping within {timeout_s:g} s", {"bound": False, "agent_answers": False})]
        missing = sorted({str(p.parent) for p in ipc_paths if not p.parent.is_dir()})
        if missing:
            return [Check("link", Status.WARN, f"{', '.join(missing)} does not exist (systemd makes /run/sunlit when "
                          "the service starts, RuntimeDirectory=)", {"bound": False})]
    try:
        flight_link = open_flight_link(link)
    except OSError as bind_error:
        if config.curve_on:
            return [_curve_in_use(link.cmd_endpoint)]
        if _answers_ping(config.link_url, timeout_s):
            return [Check("link", Status.PASS,
                          f"{link.cmd_endpoint} is in use by an agent that answers a PUS ping (17,1)",
                          {"bound": False, "agent_answers": True})]
        return [Check("link", Status.FAIL,
                      f"{bind_error}; nothing there answered a PUS ping within {timeout_s:g} s",
                      {"bound": False, "agent_answers": False})]
    flight_link.close()
    return [Check("link", Status.PASS, f"can bind {link.cmd_endpoint} and {link.tm_endpoint} (no agent running)",
                  {"bound": True})]


def _curve_in_use(endpoint: str) -> Check:
    """The link is taken and CurveZMQ is on: the agent lets in listed client keys only, and the
    selftest holds none, so it cannot ask whether the agent there answers."""
    return Check("link", Status.WARN, f"{endpoint} is in use; CurveZMQ is on, so the selftest (not a listed "
                 "client) cannot ping whatever holds it: check from the ground", {"bound": False, "curve": True})


def _unix_listening(path: Path) -> bool:
    """Whether something accepts connections on the Unix socket ``path`` (a stale file does not)."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _answers_ping(url: str, timeout_s: float) -> bool:
    """Send a PUS ping (17,1) to the agent and wait for any TM(17,x) back, on the reply or the stream."""
    import zmq

    from flight.link.apid import Apid
    from flight.link.packets import PacketError, Service, Subtype, Telemetry, pack_tc, unpack
    from flight.link.transport import open_ground_link

    ground = open_ground_link(url)
    try:
        poller = zmq.Poller()
        for item in ground.pollables():
            poller.register(item, zmq.POLLIN)
        deadline = time.monotonic() + timeout_s
        next_ping = 0.0
        while (now := time.monotonic()) < deadline:
            if now >= next_ping:  # the SUB may join late, and a DEALER connects lazily: ping again
                ground.send(pack_tc(Apid.AGENT, 0, Service.TEST, Subtype.PING, source_id=0x5E1F))
                ground.flush()
                next_ping = now + 0.25
            poller.poll(max(1, int((min(deadline, next_ping) - now) * 1000)))
            for raw in ground.receive():
                try:
                    packet = unpack(raw)
                except PacketError:
                    continue
                if isinstance(packet, Telemetry) and packet.service == Service.TEST:
                    return True
        return False
    finally:
        ground.close()


def _check_serial(device: str, baud: int) -> Check:
    path = Path(device)
    if not path.exists():
        return Check("link", Status.FAIL,
                     f"{device}: no such device; plug in the adapter, or check the udev rule "
                     "(/etc/udev/rules.d/99-sunlit-link.rules) and the UART the config names", {"device": device})
    shown = f"{device} -> {path.resolve()}" if path.is_symlink() else device
    try:
        import serial
    except ImportError as exc:
        return Check("link", Status.FAIL, f"pyserial missing: {exc}")
    try:
        port = serial.Serial(device, baud, timeout=0, write_timeout=0, exclusive=True)
    except serial.SerialException as exc:
        text = str(exc)
        if "lock" in text.lower() or "busy" in text.lower():
            return Check("link", Status.WARN,
                         f"{shown} exists but another process holds it (the running agent does; stop it to test "
                         f"the port): {text}", {"device": device, "opened": False})
        hint = "; the service user must be in group dialout" if "ermission" in text else ""
        return Check("link", Status.FAIL, f"{shown}: cannot open: {text}{hint}", {"device": device, "opened": False})
    port.close()
    return Check("link", Status.PASS, f"{shown} opens at {baud} baud", {"device": device, "opened": True})


def _check_disk(config: Config, min_free_mb: float) -> list[Check]:
    state_dir = Path(config.state_dir)
    probe = state_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free_mb = usage.free / 1e6
    data = {"path": str(probe), "free_mb": round(free_mb, 1), "min_free_mb": min_free_mb}
    if free_mb < min_free_mb:
        return [Check("disk", Status.FAIL,
                      f"{free_mb:.0f} MB free under {probe}, below {min_free_mb:g} MB: state and checkpoints "
                      "cannot be written safely", data)]
    rows = [Check("disk", Status.PASS, f"{free_mb:.0f} MB free under {probe} (at least {min_free_mb:g} MB)", data)]
    if not probe.is_dir():  # found in audit: a file there passed (or was "not writable"); the agent refuses to start
        rows.append(Check("state dir", Status.FAIL,
                          f"{probe} is a file, not a directory: the agent cannot keep its state in {state_dir}; "
                          "move the file away, or set [paths] state_dir (--state-dir) to a directory",
                          {"path": str(probe)}))
    elif not state_dir.exists():
        rows.append(Check("state dir", Status.WARN, f"{state_dir} does not exist yet (install.sh makes it)"))
    elif not os.access(state_dir, os.W_OK | os.X_OK):
        rows.append(Check("state dir", Status.FAIL,
                          f"{state_dir} is not writable by uid {os.geteuid()}: the agent could not save its state "
                          "(run the selftest as the service user)"))
    return rows


def _check_store(config: Config) -> list[Check]:
    from flight.compute.store import Copy, ModelIntegrityError, ModelStore

    compute_dir = config.compute_dir or Path(config.state_dir) / "compute"
    store = ModelStore(compute_dir / "models")
    try:
        problems = store.verify_all()
    except OSError as exc:
        return [Check("model store", Status.FAIL, f"{store.root}: cannot read: {exc}")]
    rows = [Check(f"model store {p.copy.value}", Status.FAIL,
                  f"{p.name or 'manifest'}: {p.problem.value}: {p.detail or p.path}",
                  {"copy": p.copy.value, "name": p.name, "problem": p.problem.value, "path": str(p.path)})
            for p in problems]
    try:
        working = store.list(Copy.WORKING)
        golden = store.list(Copy.GOLDEN)
    except ModelIntegrityError:
        return rows  # already reported by verify_all
    if not golden:
        status = Status.SKIP if config.compute_enabled is False else Status.FAIL
        rows.append(Check("model store", status,
                          f"no golden copy in {store.golden_root}: the compute worker installs the shipped model on "
                          "its first start, deploy/install.sh at install" + (" (compute is off)" if status is Status.SKIP else ""),
                          {"root": str(store.root), "working": [e.name for e in working], "golden": []}))
    elif not problems:
        rows.append(Check("model store", Status.PASS,
                          f"{store.root}: working {', '.join(f'{e.name}@{e.version}' for e in working) or 'none'}; "
                          f"golden {', '.join(f'{e.name}@{e.version}' for e in golden)}; every SHA-256 matches",
                          {"root": str(store.root), "working": [e.name for e in working], "golden": [e.name for e in golden]}))
    return rows


def _check_key(key_path: Path | None) -> list[Check]:
    """The telecommand key file the agent authenticates with ([security] tc_keys)."""
    name = "telecommand keys"
    if key_path is None:
        return [Check(name, Status.FAIL, "no [security] tc_keys: telecommands are not authenticated, and any "
                      f"process that reaches the link commands the board (deploy/install.sh makes {DEFAULT_KEY_PATH})")]
    try:
        st = key_path.stat()
    except FileNotFoundError:
        return [Check(name, Status.FAIL, f"{key_path}: missing (deploy/install.sh makes one)", {"path": str(key_path)})]
    except PermissionError:
        return [Check(name, Status.FAIL, f"{key_path}: cannot look at it as uid {os.geteuid()} "
                      "(run the selftest as the service user or root)", {"path": str(key_path)})]
    mode = stat.S_IMODE(st.st_mode)
    data = {"path": str(key_path), "mode": f"{mode:04o}", "uid": st.st_uid}
    if not stat.S_ISREG(st.st_mode):
        return [Check(name, Status.FAIL, f"{key_path}: not a regular file", data)]
    if mode != 0o600:
        return [Check(name, Status.FAIL, f"{key_path}: mode {mode:04o}, must be 0600 (chmod 600 {key_path})", data)]
    from flight.link.sdls import KeyFileError, KeyRing

    try:
        ring = KeyRing.load(key_path)
    except KeyFileError as exc:  # unreadable (as this uid), malformed, no active slot
        return [Check(name, Status.FAIL, str(exc), data)]
    zero = [s.spi for s in ring.slots.values() if s.key == bytes(len(s.key))]
    if zero:
        return [Check(name, Status.FAIL, f"{key_path}: slot {zero[0]} is all zeros, not a key", data)]
    masters = sorted(s.spi for s in ring.slots.values() if s.state == "master")
    data.update(active=ring.active(), masters=masters)
    try:
        import pwd

        owner = pwd.getpwuid(st.st_uid).pw_name
    except (ImportError, KeyError):
        owner = str(st.st_uid)
    text = f"{key_path}: active slots {ring.active()}, master {masters or 'none'}; mode 0600, owner {owner}"
    if not masters:
        return [Check(name, Status.WARN, f"{text}: without a master key, keys cannot be rotated by command (KEY_LOAD)",
                      data)]
    return [Check(name, Status.PASS, text, data)]


# --- running it -----------------------------------------------------------------------------


def _guarded(name: str, check: Callable[[], list[Check]]) -> list[Check]:
    """A check that raises becomes a FAIL row: the selftest itself must never crash half-way."""
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - reported, with the type, as a failed check
        return [Check(name, Status.FAIL, f"the check itself failed: {type(exc).__name__}: {exc}")]


def run_selftest(
    config: Config,
    *,
    check_link: bool = True,
    key_path: Path | str | None = None,
    min_free_mb: float = DEFAULT_MIN_FREE_MB,
    ping_timeout_s: float = PING_TIMEOUT_S,
) -> SelftestReport:
    """Run every check against ``config``; see the module docstring for what each does."""
    started = time.monotonic()
    rows: list[Check] = []
    rows += _check_config(config)
    board: Board | None = None
    hal_rows: list[Check] = []
    try:
        board = open_board(config.hal_backend, config.board_options())
    except Exception as exc:  # noqa: BLE001 - HalError, OSError, a bad board name...
        hal_rows.append(Check("hal", Status.FAIL, f"cannot open the {config.hal_backend} HAL: {exc}"))
    try:
        on_jetson = board is not None and board.nvpmodel is not None
        rows += _guarded("onnxruntime", lambda: _check_providers(config, on_jetson))
        if board is not None:
            if board.nvpmodel is not None:
                model = board.nvpmodel.model
                if board.profile is None:
                    hal_rows.append(Check("board", Status.FAIL,
                                          f"model {model!r} is not a known Orin and the config names no board: "
                                          "no profile, so no list of sensors to expect", {"model": model}))
                else:
                    hal_rows.append(Check("board", Status.PASS, f"{board.profile.name} ({board.profile.id}), "
                                          f"model {model!r}", {"board": board.profile.id, "model": model}))
            if board.profile is not None:  # as the agent checks it when it opens the board (found in review: a
                # detected board's shutdown temperature below the limit passed here, and the agent refused to start)
                problem = board_limit_problem(config.parameters, board.profile, "named by hal.board"
                                              if config.board else f"chosen by the {board.backend} backend")
                if problem is not None:
                    hal_rows.append(Check("board", Status.FAIL, f"parameters.{problem[0]}: {problem[1]}",
                                          {"parameter": problem[0]}))
            hal_rows += _guarded("sensors", lambda: _check_sensors(board))
            hal_rows += _guarded("power modes", lambda: _check_power(config, board))
    finally:
        if board is not None:
            board.close()
    rows += hal_rows
    rows += _guarded("link", lambda: _check_link(config, check_link, ping_timeout_s))
    rows += _guarded("disk", lambda: _check_disk(config, min_free_mb))
    rows += _guarded("model store", lambda: _check_store(config))
    key = key_path if key_path is not None else config.tc_keys
    rows += _guarded("telecommand keys", lambda: _check_key(Path(key) if key is not None else None))
    return SelftestReport(tuple(rows), config.source, time.monotonic() - started)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The selftest's options, on ``parser`` (its own, or ``sunlit-flight``'s subparser)."""
    parser.add_argument("--config", help=f"TOML configuration (default {DEFAULT_CONFIG} if it exists, else the "
                                         "built-in defaults)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the table")
    parser.add_argument("--no-link", action="store_true", help="do not bind or open the link")
    parser.add_argument("--key", help="the telecommand key file (default: the config's [security] tc_keys)")
    parser.add_argument("--min-free-mb", type=float, default=DEFAULT_MIN_FREE_MB, metavar="MB",
                        help=f"free space the state directory needs (default {DEFAULT_MIN_FREE_MB:g} MB)")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    """Run with parsed options; 0 passed, 1 failed, 2 the configuration cannot be used."""
    path = args.config
    try:
        if not path and DEFAULT_CONFIG.exists():
            path = DEFAULT_CONFIG
        config = load_config(path)
    except (ConfigError, OSError) as exc:
        if isinstance(exc, OSError):  # /etc/sunlit is root:sunlit 0750: cannot even look in it
            exc = ConfigError(f"{exc.filename or path}: cannot read it as uid {os.geteuid()}: {exc.strerror}")
        if args.json:
            print(json.dumps({"passed": False, "config": str(path), "error": str(exc), "rows": []}))
        else:
            print(f"sunlit selftest: {exc}", file=sys.stderr)
        return 2
    report = run_selftest(config, check_link=not args.no_link, key_path=args.key, min_free_mb=args.min_free_mb)
    if args.json:
        print(json.dumps(report.to_json(), default=str))
    else:
        print(report.table())
    return 0 if report.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flight.selftest``: ``sunlit-flight selftest`` itself, so a reader gone (``| head``), a full
    disk or a Ctrl-C is said in one line as there (found in audit: each a traceback here)."""
    from flight.entry import launch  # the CLI by name: it imports this module (no cycle)

    return launch("flight.cli:main", "sunlit-flight", args=(["selftest", *(sys.argv[1:] if argv is None else argv)],))


__all__ = [
    "Check",
    "SelftestReport",
    "Status",
    "add_arguments",
    "main",
    "run_from_args",
    "run_selftest",
    "tiny_model_bytes",
]

if __name__ == "__main__":
    sys.exit(main())
