"""The closed loop: fly the agent through a profile, feeding its load back into battery and heat.

Each step (``step_s`` of simulated time):

1. faults due at this time are applied;
2. the environment at time t goes to the agent over its ``sim`` backend: temperatures from the
   thermal model, battery charge and bus voltage from the battery model, the board's power from the
   last load, and the solar input the EPS delivers: the profile's available power up to what the loads
   then drawn and the battery take (with the battery full, the loads': an EPS measures what its arrays
   deliver, not what they could give), each as the agent's instruments read it (``[sensors]``: a fuel
   gauge of whole percent that reports the capacity it has learnt, power read with noise; the harness's
   own battery, power and work are the truth); with it, how many ground packets the agent must have
   taken in first (``Env.link_in``, :meth:`ClosedLoop._uplinked`);
3. the agent answers with its power mode, mode and compute duty; the board profile turns them
   into board power (idle + duty × (loaded − idle) of that mode); commands due go through the
   real ground link, the agent having seen time t;
4. the battery integrates solar − platform − board over the step, the thermal model the
   board's dissipation with solar, albedo and Earth IR, and the work done is accounted; the
   ground client takes in what came and acknowledges the agent's packet store (PUS 15).

Lockstep (deterministic for a seed): simulated time moves as fast as the agent answers, or no
faster than ``speed`` simulated seconds per wall second. Compute work is modelled from the
board profile's throughput per power mode (``tiles_per_s_at_maxn`` × ``inference_rel_maxn``),
unless ``[compute] real = true`` runs the real worker, whose tile count is then reported too.
Real time: the environment follows the wall clock, the agent runs on its real clock. A step that
starts more than half a step (at least ``LATE_FLOOR_S``) after its wall-clock time is late: said
in the notes, and the run fails (``on_time``), as the environment no longer followed the clock. The
time the harness itself spends restarting the agent for a fault (a reboot waits for its hello) is
not lateness: the steps after it catch up.

An agent whose process exits by itself (a crash: not a fault's kill, which restarts it) is found
while the harness waits for its answer (the process is polled every ``ALIVE_POLL_S``,
hil/sim_env.py), never waited out: from that step on it is flown as down, with no work and no
commands, the board modelled as staying powered, idle at its last power mode; later faults are
not applied, the remaining steps are flown at once, and the run fails (``agent_alive``). One that
leaves ``MAX_SILENT_STEPS`` steps in a row unanswered is hung: the harness kills it, and it is flown
the same way; so is one a fault restarted that does not say hello within ``HELLO_TIMEOUT_S`` (or, with
no proxy between, answer the ground's ping within ``PING_TIMEOUT_S``), its cause named. A packet the
harness's console failed on (its handler, or the ground client taking it in) ends the run as an internal
error once the agent has stopped: what it said was never judged.

Faults with a duration end after it: a zone reads again, the signal returns, the board powers
up, and a hung worker (``compute_hang``, SIGSTOP) is resumed with SIGCONT at ``at_s +
duration_s`` if it is still the process that was stopped (with ``duration_s`` 0 it stays hung
until the agent's watchdog replaces it; hangs overlapping on one worker, until the last of them
ends). Each fault's log entry says what it hit; hil/faults.py judges whether the agent noticed
and answered.

The link: with a ``[link]`` table the ground client talks to the agent through a
:class:`hil.link_proxy.LinkProxy` with the scenario's faults; with ``gate_by_contact`` its gate
is the profile's ``in_contact`` at the step being flown (simulated time, never the wall clock),
so telemetry sent out of contact is lost and commands wait for the next contact. A ``los`` fault
shuts the same gate for its duration (a scenario with one flies through a proxy, faultless
without a ``[link]`` table): nothing goes up, the store's acknowledgements included, and nothing
the agent sends comes down, so the agent's own contact timeout is what is tested. The client
joins before time starts on a clean, open link; an agent restarted out of contact is heard at
the next one. A packet in flight across a step boundary is judged at the step the proxy takes
it in: at a contact's edges that is the step of the packet or the next one.

Upsets into the worker's memory (``[radiation] memory_upset_scale``, real compute only): each
step the harness draws them from the profile's ``upset_rate_per_s`` (the truth) and asks the
worker for each by a request file; the worker (``[compute] upset_injection``, set in the
configuration written here) flips the bits and keeps a ledger of what became of each, which the
harness reads once the agent has stopped (``RunResult.memory_upsets``).
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

import tomli_w

from flight.compute.inject import LEDGER as INJECT_LEDGER
from flight.compute.inject import REQUEST_DIR as INJECT_DIR
from flight.hal.boards import load_board
from flight.hal.sim_protocol import EpsValues, Load
from flight.link.definitions import Admission, Mode
from flight.link.messages import EventRecord, PlanRecord
from flight.storage import CorruptFile, read_checked_json, write_checked_json
from ground.client import CommandTimeout, GroundClient
from hil.agent_process import AgentProcess
from hil.faults import PACKET_FAULT_UNSENT
from hil.link_proxy import UP, LinkFaults, LinkProxy
from hil.scenario import FaultSpec, Scenario
from hil.sim_env import AgentDied, AgentSilent, SimEnvironment

MAX_DRAWN_FAULTS_PER_STEP = 10  # upsets drawn from fault_rate_scale per step at most: past it said, and fails the run
MAX_MEMORY_UPSETS_PER_STEP = 1000  # request files written per step at most: a scale past it is said, and fails the run
STEP_TIMEOUT_S = 30.0  # wall seconds the harness waits for the agent's answer to a step
HELLO_TIMEOUT_S = 60.0  # wall seconds the harness waits for a (re)started agent's hello on the sim link
PING_TIMEOUT_S = 30.0  # wall seconds the ground client waits for a (re)started agent to answer its ping
# Steps in a row the agent may leave unanswered: past them it is hung, killed and flown as down (found in audit: a
# hung agent cost STEP_TIMEOUT_S a step to the end, 4.8 hours for one orbit of 10-s steps).
MAX_SILENT_STEPS = 3
UNREAD_GRACE_S = 30.0  # wall seconds a request may wait untaken at the end of a run (the worker's watchdog restart fits)
LINK_SETTLE_S = 1.0  # wall seconds to wait for the proxy to take in what the client sent, before a step
# Real time: a step that starts later than half a step after its wall-clock time is late (the environment
# no longer follows the clock), and fails the run (``on_time``). The floor: below 0.1 s a step's own round
# trip (two ZeroMQ messages and a turn of the agent's loop, tens of ms) and a loaded host's scheduling (two
# test workers on two cores) would count as lateness, not a stalled agent or harness.
LATE_FLOOR_S = 0.1
MAX_LATE_NOTES = 10  # late steps said one by one in the notes; past it, one line counts the rest

# Zone offsets from the lumped board temperature: the junction runs hottest (estimate, as the
# board profiles' own numbers; a lumped model has one board node).
MAX_PLANS = 2000  # a day of plans at one a minute, and then some: the report keeps the newest
ZONE_OFFSETS_C = {"tj-thermal": 0.0, "cpu-thermal": -2.0, "gpu-thermal": -1.0, "soc0-thermal": -3.0}


@dataclass
class Trace:
    """Everything recorded per step; arrays for the report, lists while running."""

    time_s: list[float] = field(default_factory=list)
    soc_pct: list[float] = field(default_factory=list)
    bus_voltage_v: list[float] = field(default_factory=list)
    solar_power_w: list[float] = field(default_factory=list)  # the profile's: what the arrays could give
    # what the EPS took from them over the step as flown: solar_power_w up to the loads and what the battery took, the
    # rest left on the arrays. The agent's solar channel reads the same, with its noise, as the step begins under the
    # load then drawn (its last answer's)
    solar_delivered_w: list[float] = field(default_factory=list)
    board_power_w: list[float] = field(default_factory=list)
    platform_load_w: list[float] = field(default_factory=list)  # the truth's, its [power] load_steps in it
    temp_board_c: list[float] = field(default_factory=list)
    temp_radiator_c: list[float] = field(default_factory=list)
    power_mode: list[str] = field(default_factory=list)
    mode: list[str] = field(default_factory=list)
    duty: list[float] = field(default_factory=list)
    work: list[float] = field(default_factory=list)  # cumulative tiles
    # cumulative Wh the battery could not supply (empty: a brownout of the bus for that part of the step), bus
    # side: what the loads (and a brownout fault's draw) asked of the bus and did not get, before discharge losses
    unserved_wh: list[float] = field(default_factory=list)
    shadow_factor: list[float] = field(default_factory=list)
    absorbed_w: list[float] = field(default_factory=list)  # the heat the radiator took from Sun and Earth this step
    proton_flux_cm2_s: list[float] = field(default_factory=list)
    agent_up: list[bool] = field(default_factory=list)
    compute_threads: list[float] = field(default_factory=list)  # the worker's threads (HK; nan: none): a change reloads the model

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.__dict__.items()}


@dataclass
class RunResult:
    scenario: Scenario
    trace: Trace
    events: list[dict[str, Any]]
    faults: list[dict[str, Any]]
    commands: list[dict[str, Any]]
    wall_s: float
    sim_s: float
    max_lag_ms: float | None
    agent_silences: int
    real_tiles: int | None
    notes: list[str]
    # The energy plans the agent downlinked (TM(140,1), PlanRecord.to_json()), oldest first,
    # the newest MAX_PLANS: what it predicted, to hold against what the truth did.
    plans: list[dict[str, Any]] = field(default_factory=list)
    plans_received: int = 0  # all of them, kept or not
    # [link]: the proxy's counters per direction (hil/link_proxy.py ProxyStats) and whether it
    # gated by contact; empty without a [link] table.
    link: dict[str, Any] = field(default_factory=dict)
    # [radiation] memory_upset_scale: the upsets asked of the worker and its ledger's account of
    # them (flight/compute/inject.py); empty when none were asked.
    memory_upsets: dict[str, Any] = field(default_factory=dict)
    # [radiation] fault_rate_scale: upsets drawn past MAX_DRAWN_FAULTS_PER_STEP in a step, not applied.
    faults_not_drawn: int = 0
    # The agent's process exited on its own (not a fault's kill): when (run-relative s) and how; None: it ran on.
    agent_died_at_s: float | None = None
    agent_died_how: str = ""
    # Real time: steps that started later than late_bound_ms after their wall-clock time (each said in the notes).
    late_steps: int = 0
    late_bound_ms: float | None = None


class ClosedLoop:
    def __init__(self, scenario: Scenario, workdir: Path, progress: Callable[[float], None] | None = None):
        from hil.physics import Battery, BatteryParams, ThermalModel
        from hil.profiles import load_or_generate

        self.sc = scenario
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.profile = load_or_generate(scenario)
        self.board = load_board(scenario.board)
        self.modes = list(self.board.modes)
        self.battery = Battery(BatteryParams(capacity_wh=scenario.capacity_wh,
                                             charge_efficiency=scenario.charge_efficiency,
                                             discharge_efficiency=scenario.discharge_efficiency),
                               scenario.soc_initial_pct)
        # Start near the orbit-average equilibrium of an idle board, not at room temperature.
        params = scenario.thermal_params()  # [thermal]: the radiator the rig sized to its board
        mean_sun = float(np.mean(self.profile.columns["shadow_factor"]))
        board_c, radiator_c = params.steady_state_c(self.board.modes[0].idle_power_w, mean_sun)
        self.thermal = ThermalModel(params, float(board_c), float(radiator_c))
        self.rng = random.Random(scenario.seed)
        self.memory_rng = random.Random(scenario.seed * 7919 + 17)  # its own stream: other draws stay as they were
        self.sensor_rng = np.random.default_rng([scenario.seed, 5])  # the instruments' noise: a stream of its own
        self.temp_rng = np.random.default_rng([scenario.seed, 6])  # the thermal zones' and the bus voltage's: apart,
        self.voltage_rng = np.random.default_rng([scenario.seed, 7])  # so the power readings stay as they were
        self.memory_requested: dict[str, int] = {}
        self._memory_count = 0
        self.memory_not_written = 0  # drawn past MAX_MEMORY_UPSETS_PER_STEP in one step
        self.faults_not_drawn = 0  # drawn past MAX_DRAWN_FAULTS_PER_STEP in one step
        self.trace = Trace()
        self._unserved_wh = 0.0  # the battery could not supply (cumulative, in the trace)
        self.events: list[dict[str, Any]] = []
        self.plans: list[dict[str, Any]] = []
        self.plans_received = 0
        self.fault_log: list[dict[str, Any]] = []
        self.command_log: list[dict[str, Any]] = []
        # What reading the profile filled in or did (default columns, a longer profile regenerated): the run's
        # truth rests on it (found in audit: these notes were dropped).
        self.notes: list[str] = [f"profile: {note}" for note in self.profile.notes]
        self._zone_faults: dict[str, tuple[float, float | None]] = {}  # zone -> (until_s, stuck value | None)
        self._los_until = -math.inf
        self._has_los = any(f.kind == "los" for f in scenario.faults) and scenario.agent != "naive"
        self._agent_down_until = -math.inf
        self._drawn: set[int] = set()  # ids of the faults drawn from [radiation] fault_rate_scale
        # Packet faults applied and waiting for the next telecommand, oldest first, each its fault log entry: one
        # hits each command (found in audit: a flag per kind, so two drops before one command were both credited
        # to it, and a drop after a corruption overwrote the corruption's record)
        self._packet_faults: deque[dict[str, Any]] = deque()
        self._t0_s = float(self.profile.start_s)
        self._rel_s = 0.0  # the step being flown, relative to the start
        self._hung: list[tuple[float, int, str | None, dict[str, Any]]] = []  # (resume at rel s, pid, start tag, log)
        self.silences = 0
        self._silent_in_row = 0  # steps the agent has left unanswered since its last answer
        # Found in audit: a crashed agent was flown on at its last answer (COMPUTE, work credited, its power fed
        # to the battery) and each step waited 30 s for it. Its death is now seen and the run fails on it.
        self._died_at_s: float | None = None
        self._died_how = ""
        self.agent: AgentProcess | None = None
        self.env: SimEnvironment | None = None
        self.client: GroundClient | None = None
        self.proxy: LinkProxy | None = None
        self._link_sync: tuple[int, int] | None = None  # (the agent's link_taken, _uplinked()) at its last answer
        self._uplink_lost = 0  # packets the client sent that have not reached the proxy
        self._holds_noted = 0  # the running agent's link_holds_expired, as last said in the notes
        self._unsynced_noted = False
        self._flying = False  # time has started: the link's faults and gate apply
        self._contact = True  # the profile's in_contact at the step being flown (read by the proxy's thread)

    # --- the agent ------------------------------------------------------------------------

    def agent_config(self) -> dict[str, Any]:
        """The agent's configuration for this scenario (flight/config.py documents every key)."""
        sc = self.sc
        lockstep = sc.time_mode == "lockstep"
        config: dict[str, Any] = {
            "hal": {"backend": "sim", "board": sc.board, "sim_endpoint": f"ipc://{self.workdir}/sim",
                    "lockstep": lockstep},
            "rates": {"hk_period_s": 10.0 if lockstep else 1.0, "control_period_s": 10.0 if lockstep else 1.0},
            "power": {"battery_capacity_wh": float(sc.nameplate_wh or sc.capacity_wh),
                      "platform_load_w": self.believed_platform_load_w()},
            "compute": {"enabled": bool(sc.compute_real), "upset_injection": sc.memory_upset_scale > 0},
            "paths": {"state_dir": str(self.workdir / "state")},
        }
        from hil.profiles.generate import believed_tle

        tle = self.profile.tle()
        if tle and lockstep:  # in real time the profile's epoch is not the agent's clock
            config["orbit"] = {"tle": list(believed_tle(tle, sc.tle_along_track_km))}
        # The harness acknowledges the agent's packet store once a step (the ground station's
        # role): the agent must count the ground as listening across at least three steps, and
        # give what was on its way when the ground was first heard (playback_grace_s), or any
        # packet sent live (playback_resend_s), the next step's acknowledgement before it plays
        # it back: its turn at the next step comes before that acknowledgement.
        config["parameters"] = {"ground_window_s": min(3600.0, max(10.0, 3.0 * sc.step_s)),
                                "playback_grace_s": min(3600.0, max(3.0, 1.5 * sc.step_s)),
                                "playback_resend_s": min(86400.0, max(30.0, 1.5 * sc.step_s)),
                                **dict(sc.agent_parameters or {})}
        if sc.array and tle and lockstep:
            config["array"] = self.believed_array()
        return config

    def believed_platform_load_w(self) -> float:
        """The platform load the agent is configured with: the truth's, [belief] platform_load_error_pct off (a
        power budget with its margin); the agent learns the rest from its gauge (flight/power/load.py)."""
        return float(self.sc.platform_load_w) * (1.0 + self.sc.platform_load_error_pct / 100.0)

    def believed_array(self) -> dict[str, Any]:
        """The agent's model of its arrays: the scenario's geometry, with the errors [belief] sets
        (the truth is in the profile; the agent never sees it, only the power it measures)."""
        from hil.profiles.generate import SpacecraftParams

        truth = SpacecraftParams(**self.sc.array)  # its panels: the scenario's, or its one-panel shorthand's
        known = self.sc.degradation_known
        return {
            "pointing": truth.array_pointing,
            "attitude": truth.array_attitude,  # the geometry is known; the cells' output is not
            "efficiency": min(1.0, truth.array_efficiency * (1.0 + self.sc.efficiency_error_pct / 100.0)),
            "degradation_per_year": truth.degradation_per_year if known else 0.0,
            "years": truth.years_in_orbit if known else 0.0,
            "panels": [{"normal": list(normal), "area_m2": area_m2} for normal, area_m2 in truth.panels],
        }

    def _agent_args(self) -> list[str]:
        cfg = self.workdir / "agent.toml"
        cfg.write_bytes(tomli_w.dumps(self.agent_config()).encode())
        return ["--config", str(cfg)]

    def _agent_alive(self) -> bool:
        return self.agent is not None and self.agent.running

    def _agent_died(self, why: str = "") -> None:
        """The agent's process has exited by itself (or, ``why``, the harness killed it hung): from this step on it
        is down (no answer, no work, no commands; the board is modelled as staying powered, idle at its last power
        mode), and the run fails (``agent_alive``). Faults due later are not applied: there is nothing left to
        break."""
        if self._died_at_s is not None:
            return
        code = self.agent.proc.returncode if self.agent is not None and self.agent.proc is not None else None
        last = [line for line in (self.agent.log() if self.agent else "").splitlines() if line.strip()][-1:]
        self._died_at_s = self._rel_s
        self._died_how = (why or f"exit code {code}") + (f"; its log's last line: {last[0][:200]}" if last else "")
        self.notes.append(f"t={self._rel_s:.0f} s: the agent's process exited ({self._died_how}); flown as down from "
                          "then on: no work, no commands, the board idle at its last power mode")

    def _start_agent(self) -> None:
        link = f"zmq+ipc://{self.workdir}/link"
        self.agent = AgentProcess(link, self.workdir / "agent.log", self._agent_args()).start()
        self.env.wait_for_agent(timeout_s=HELLO_TIMEOUT_S, alive=self._agent_alive)
        self._link_sync = None  # a new agent counts from its start: its first answer says where it is
        self._holds_noted = 0
        self._silent_in_row = 0  # the old agent's silences are not the new one's (found in review: killed as hung)
        if (self.sc.link is not None or self._has_los) and self.proxy is None:
            # Clean until time starts (run() sets the scenario's faults then), so the console can join.
            # A los fault is the contact gate's loss of signal (found in audit: it only held commands, while
            # the store's acknowledgements went up and telemetry came down, so the agent never lost contact).
            gated = self._has_los or self.sc.link.gate_by_contact
            self.proxy = LinkProxy(f"zmq+ipc://{self.workdir}/ground", link, LinkFaults(),
                                   gate=self._link_up if gated else None,
                                   seed=self.sc.link.seed if self.sc.link is not None else self.sc.seed).start()
        if self.client is None:
            self.client = GroundClient(self.proxy.front_url if self.proxy is not None else link)
            self.client.listeners.append(self._on_packet)
        if self.proxy is None or not self._flying:
            self.client.connect(timeout_s=PING_TIMEOUT_S)
            return
        # A restart under the proxy: the console's subscription to the proxy stands; the proxy
        # rejoins the new agent by itself. Out of contact (or through faults) the ground may not hear it now.
        if not self._link_up():
            self.notes.append(f"t={self._rel_s:.0f} s: the agent restarted out of contact; the ground hears it "
                              "at the next contact")
            return
        try:
            self.client.connect(timeout_s=PING_TIMEOUT_S)
        except TimeoutError as exc:
            self.notes.append(f"t={self._rel_s:.0f} s: the restarted agent was not heard through the link's "
                              f"faults: {exc}")

    def _uplinked(self) -> int:
        """Ground packets put on the agent's link so far: those the client sent, or through a proxy
        those it handed on once it has taken in what the client sent (a packet it delays or holds
        is counted when it goes). Each step asks the agent to have taken in, before it moves its
        clock, what it had at its last answer plus what went on the link since
        (``Env.link_in``): a command or acknowledgement sent after a step is taken at that
        step's time, not at the next one's as the two sockets happened to deliver. A packet the
        client counted that never reached the proxy (a retry's new socket drops the old one's
        queue) is waited for once, :data:`LINK_SETTLE_S`."""
        if self.client is None:
            return 0
        sent = self.client.link.stats.tx_packets
        if self.proxy is None:
            return sent
        passed, taken = self.proxy.handed_on(UP, sent - self._uplink_lost, LINK_SETTLE_S)
        lost = max(0, sent - taken)  # what never came; one that comes late is not counted again
        if lost > self._uplink_lost:
            self.notes.append(f"t={self._rel_s:.0f} s: {lost - self._uplink_lost} ground packet(s) the client "
                              "counted never reached the link proxy (waited LINK_SETTLE_S, or its thread stopped)")
        self._uplink_lost = lost
        return passed

    def _link_up(self) -> bool:
        """The proxy's gate: open before time starts; then shut while a ``los`` fault lasts and, under
        ``gate_by_contact``, while the profile's in_contact is false at the step being flown."""
        if not self._flying:
            return True
        if self._t0_s + self._rel_s < self._los_until:
            return False
        gated = self.sc.link is not None and self.sc.link.gate_by_contact
        return not gated or self._contact

    def _on_packet(self, item: Any) -> None:
        rec = item.record
        if isinstance(rec, EventRecord):
            # rel_s: on the run's time axis. Under lockstep the agent's clock is simulated time; in
            # real time it is the wall clock, so the event is placed at the step it arrived in, less
            # its age if it came in playback (late news: it happened out of contact).
            if self.sc.time_mode == "lockstep":
                rel_s = rec.time_s - self._t0_s
            else:
                late_s = time.time() - rec.time_s if getattr(item, "played_back", False) else 0.0
                rel_s = self._rel_s - max(0.0, late_s)
            self.events.append({"t": rec.time_s, "rel_s": rel_s, "name": rec.event.name,
                                "severity": rec.event.severity.name, "text": rec.text, "args": dict(rec.args)})
        elif isinstance(rec, PlanRecord):
            plan = rec.to_json()
            if self.sc.time_mode != "lockstep":  # the agent's clock is the wall's: onto the run's time axis
                plan["start_unix_s"] += self._t0_s + self._rel_s - rec.time_s
            self.plans.append(plan)
            self.plans_received += 1
            del self.plans[:-MAX_PLANS]

    # --- one step ---------------------------------------------------------------------------

    def _temps(self, t: float, board_c: float) -> dict[str, float | None]:
        """The thermal zones as the agent reads them: the model's board temperature with each zone's offset and
        ``[sensors] temp_noise_c`` of noise (seeded), rounded to the millidegree sysfs gives; a faulted zone reads
        its fault's value exactly."""
        noise_c = self.sc.temp_noise_c
        temps: dict[str, float | None] = {
            z: round(board_c + off + (noise_c * float(self.temp_rng.normal()) if noise_c > 0 else 0.0), 3)
            for z, off in ZONE_OFFSETS_C.items()}
        for zone, (until, stuck) in list(self._zone_faults.items()):
            if t >= until:
                del self._zone_faults[zone]
            else:
                temps[zone] = stuck
        return temps

    def _mode_of(self, load: Load) -> Any:
        """The board profile's power mode the agent last asked for (the first if it names none the board has)."""
        names = [m.name for m in self.modes]
        return self.modes[names.index(load.power_mode)] if load.power_mode in names else self.modes[0]

    def _board_power_w(self, load: Load) -> tuple[float, float, str]:
        mode = self._mode_of(load)
        duty = min(1.0, max(0.0, load.compute_duty))
        return mode.idle_power_w + duty * (mode.loaded_power_w - mode.idle_power_w), duty, mode.name

    def _naive_load(self) -> Load:
        """The baseline: a board that computes flat out at its top mode whatever the battery says."""
        return Load(None, None, self.modes[-1].name, Mode.COMPUTE, Admission.ALL, 1.0)

    def run(self) -> RunResult:
        sc = self.sc
        naive = sc.agent == "naive"
        t0 = float(self.profile.start_s)
        n_steps = int(round(sc.duration_s / sc.step_s))
        try:
            if not naive:
                self.env = SimEnvironment(f"ipc://{self.workdir}/sim")
                self._start_agent()
            drawn = self._drawn_faults(t0, n_steps)
            self._drawn = {id(f) for f in drawn}  # their log entries say so: one that hits nothing is no scenario's
            faults = list(sc.faults) + drawn
            faults.sort(key=lambda f: f.at_s)
            if self.proxy is not None and sc.link is not None:
                self.proxy.set_faults(sc.link.faults)
        except BaseException:  # a stop before the flight (Ctrl-C, kill PID, a fault): nothing left running
            self._shutdown()
            raise
        commands = list(sc.commands)
        state = Load(None, None, self.modes[0].name, Mode.BOOT, Admission.NONE, 0.0)
        work = 0.0
        wall0 = time.monotonic()
        max_lag = 0.0
        late_bound_s = max(LATE_FLOOR_S, 0.5 * sc.step_s)
        late_steps = 0
        excused_s = 0.0  # real time: wall seconds the harness spent restarting the agent (a fault), not late
        self._flying = True
        try:
            for k in range(n_steps + 1):
                rel_s = k * sc.step_s
                t = t0 + rel_s
                row = self.profile.at(rel_s)
                self._rel_s = rel_s
                self._contact = bool(row.get("in_contact", True))
                self._end_hangs(rel_s)
                applying = time.monotonic()
                while faults and step_of(faults[0].at_s, sc.step_s) <= k:
                    self._apply_fault(faults.pop(0), t, rel_s)
                excused_s += time.monotonic() - applying  # a reboot's restart waits for the new agent's hello
                if sc.compute_real and not naive and k % max(1, round(sc.capture_every_s / sc.step_s)) == 0:
                    self._capture(k)
                if sc.memory_upset_scale > 0 and not naive and k < n_steps:
                    self._memory_upsets({"upset_rate_per_s": self._mean_rate(rel_s)}, rel_s)
                board_c = self.thermal.board_temp_c
                dead = self._died_at_s is not None
                up = naive or (t >= self._agent_down_until and not dead)
                if dead:
                    pass  # no agent left to keep time with: the rest is flown down at once
                elif sc.time_mode == "realtime":  # the environment follows the wall clock
                    lag = time.monotonic() - (wall0 + rel_s)
                    if lag < 0:
                        time.sleep(-lag)
                    lag = time.monotonic() - (wall0 + rel_s)
                    max_lag = max(max_lag, lag)
                    # Found in audit: max_lag was measured and judged by nothing; a stalled agent passed. The time
                    # the harness itself spent restarting the agent for a fault is not lateness (found in review: a
                    # reboot failed every real-time run); the steps after it catch up, the allowance with them.
                    if lag - excused_s > late_bound_s:
                        late_steps += 1
                        if late_steps <= MAX_LATE_NOTES:
                            self.notes.append(f"t={rel_s:.0f} s: the step started {lag * 1000:.0f} ms after its "
                                              f"wall-clock time (late past {late_bound_s * 1000:.0f} ms)")
                    excused_s = min(excused_s, max(0.0, lag))
                elif sc.speed > 0:
                    ahead = wall0 + rel_s / sc.speed - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                silent = False
                if naive:
                    state = self._naive_load()
                elif up:
                    silences = self.silences
                    state = self._exchange(t, row, board_c, state)
                    up = self._died_at_s is None  # it died in this step: flown as down from it on
                    silent = self.silences > silences
                    # Commands go after the step: the agent has seen time t (and booted at the first).
                    while (up and commands and step_of(commands[0].at_s, sc.step_s) <= k and t >= self._los_until
                           and self._link_up()):
                        self._send_command(commands.pop(0), rel_s)
                elif not dead and not self._agent_alive():  # died while held down (a brownout): noticed now, not
                    self._agent_died()  # never (found in audit: a death in a brownout lasting past the end passed)
                if up and silent:  # no answer: the board idle at its last mode, no work credited (found in audit:
                    mode = self._mode_of(state)  # a hung agent's silent steps were flown at its last answer, working)
                    board_w, duty, mode_name = mode.idle_power_w, 0.0, mode.name
                elif up:
                    board_w, duty, mode_name = self._board_power_w(state)
                elif self._died_at_s is not None:  # the board stays on, idle: only the agent's process is gone
                    mode = self._mode_of(state)
                    board_w, duty, mode_name = mode.idle_power_w, 0.0, mode.name
                else:
                    board_w, duty, mode_name = 0.0, 0.0, "OFF"
                platform_w = sc.platform_load_at_w(rel_s)  # the truth's, with its steps nobody announced
                self._record(t, row, board_w, platform_w, duty, mode_name, state.mode.value if up else "DOWN", work, up)
                if k == n_steps:
                    break
                net_w = row["solar_power_w"] - platform_w - board_w
                served = 1.0  # the part of the step's demand the battery could meet (an audit: an empty battery
                # had no effect, the board working on at 0 %, and the run could pass)
                unserved_wh = self.battery.step(net_w, sc.step_s).unserved_wh
                if unserved_wh > 0.0:
                    self._unserved_wh += unserved_wh
                    served = max(0.0, 1.0 - unserved_wh / (-net_w * sc.step_s / 3600.0))
                self.thermal.step(board_w, row.get("shadow_factor", 1.0), sc.step_s,
                                  albedo_w_m2=row.get("albedo_w_m2"), earth_ir_w_m2=row.get("earth_ir_w_m2"))
                names = [m.name for m in self.modes]
                rel = self.modes[names.index(mode_name)].inference_rel_maxn if mode_name in names else 0.0
                work += rel * sc.tiles_per_s_at_maxn * duty * sc.step_s * served  # no power, no work
                if self.client is not None:
                    self.client.poll(0)
                    if self._link_up():  # the ground station: what it heard, and that it listens (PUS 15)
                        self.client.acknowledge_store()
                if self.progress:
                    self.progress(rel_s / sc.duration_s)
        finally:
            real_tiles = self._shutdown()
        if self.client is not None and self.client.internal_errors:
            # The harness's console (its packet handler, or the ground client taking a packet in) failed: the client
            # counts it and goes on, so what those packets said was lost to the judge unseen (found in audit: an
            # event the handler failed on was simply missing, and the run passed). A fault of the harness: exit 3.
            raise RuntimeError(f"the harness's ground console failed on {self.client.internal_errors} packet(s) "
                               f"from the agent, which the run's criteria never saw (the last: "
                               f"{self.client.last_internal_error})")
        if late_steps > MAX_LATE_NOTES:
            self.notes.append(f"{late_steps - MAX_LATE_NOTES} more late steps, not listed one by one")
        why = ("not sent: the naive baseline has no agent to command" if naive
               else "not sent: the agent's process had died" if self._died_at_s is not None
               else "not sent: no link before the end of the run")
        for cmd in commands:  # held for the link (or a los) until the end, or no agent: never sent, and said (found in
            self.command_log.append({"at_s": cmd.at_s, "command": cmd.command, "args": cmd.args, "outcome": why})  # audit)
        if naive and (sc.agent_parameters or sc.commands):
            self.notes.append("the naive baseline flies always in COMPUTE at the top mode: the scenario's [parameters] "
                              "and [[commands]] (kept alike for a sunlit run to compare with) were not used")
        link: dict[str, Any] = {}
        if self.proxy is not None:
            link = {**self.proxy.stats().as_dict(), "gate_by_contact": sc.link is not None and sc.link.gate_by_contact,
                    "los_fault": self._has_los}
        return RunResult(sc, self.trace, self.events, self.fault_log, self.command_log, time.monotonic() - wall0,
                         sc.duration_s, max_lag * 1000.0 if sc.time_mode == "realtime" else None, self.silences,
                         real_tiles, self.notes, list(self.plans), self.plans_received, link,
                         self._memory_account() if sc.memory_upset_scale > 0 and not naive else {},
                         self.faults_not_drawn, self._died_at_s, self._died_how, late_steps,
                         late_bound_s * 1000.0 if sc.time_mode == "realtime" else None)

    def _exchange(self, t: float, row: dict[str, float], board_c: float, last: Load) -> Load:
        board_w = self._board_power_w(last)[0]
        if not self._agent_alive():  # gone between steps: no step can be sent to it
            self._agent_died()
            return last
        try:
            lockstep = self.sc.time_mode == "lockstep"
            read_w = self._measured_w(board_w)
            # What the EPS delivers as the step begins, under the load then drawn (the last answer's): with the
            # battery full, the loads', not what the arrays could give, which no board could measure.
            solar_w = self._delivered_w(row["solar_power_w"], self.sc.platform_load_at_w(self._rel_s) + board_w)
            link_in = None
            if lockstep and self._link_sync is not None:
                taken, uplinked = self._link_sync
                link_in = taken + self._uplinked() - uplinked
            load = self.env.step(t if lockstep else None, timeout_s=STEP_TIMEOUT_S,
                                 temps_c=self._temps(t, board_c), rails_w={"VDD_IN": read_w}, board_power_w=read_w,
                                 eps=EpsValues(self._gauge_pct(), self._measured_bus_v(),
                                               self._measured_w(solar_w), self._gauge_capacity_wh()),
                                 link_in=link_in, alive=self._agent_alive)
            if lockstep and isinstance(load.link_taken, int):
                self._link_sync = (load.link_taken, self._uplinked())
            elif lockstep and not self._unsynced_noted:
                self._unsynced_noted = True
                self.notes.append(f"t={self._rel_s:.0f} s: the agent does not say what its link took in "
                                  "(Load.link_taken): its steps are not ordered with the ground packets")
            if load.link_holds_expired > self._holds_noted:  # said, not hidden: that step's order was not kept
                self.notes.append(f"t={self._rel_s:.0f} s: the agent took a step without every ground packet the "
                                  "harness had sent before it (a packet lost; waited LINK_HOLD_S)")
                self._holds_noted = load.link_holds_expired
            self._silent_in_row = 0
            return load
        except AgentDied:
            self._agent_died()
            return last
        except AgentSilent as exc:  # run-relative time, as every other note (found in audit: it gave Unix time)
            self.silences += 1
            self._silent_in_row += 1
            self.notes.append(f"t={self._rel_s:.0f} s: {exc}; the step was flown idle at its last mode, with no work")
            if self._silent_in_row >= MAX_SILENT_STEPS:  # hung: not waited out to the end of the run
                # a stopped worker takes its parent's death signal only once it runs again
                self._resume_hung("its agent was killed, hung")
                self.agent.kill()
                self._agent_died(f"hung: it answered none of {self._silent_in_row} steps in a row "
                                 f"({STEP_TIMEOUT_S:g} s each), and the harness killed it")
            return last

    def _gauge_pct(self) -> float:
        """The battery's charge as the agent's fuel gauge reads it ([sensors] soc_step_pct). The run's own
        charge, and its criteria, are the truth."""
        from hil.physics import gauge_pct

        return gauge_pct(self.battery.soc_pct, self.sc.soc_step_pct)

    def _gauge_capacity_wh(self) -> float | None:
        """The capacity the gauge has learnt ([sensors] gauge_capacity, capacity_error_pct), or None."""
        sc = self.sc
        return sc.capacity_wh * (1.0 + sc.capacity_error_pct / 100.0) if sc.gauge_capacity else None

    def _delivered_w(self, available_w: float, loads_w: float) -> float:
        """The solar power the EPS takes from the arrays over the step from now with ``loads_w`` on the bus
        (hil.physics.delivered_solar_w): the battery's energy balance for that step, its clipped energy left on the
        arrays."""
        from hil.physics import delivered_solar_w

        return delivered_solar_w(available_w, loads_w, self.battery.room_w(self.sc.step_s))

    def _measured_w(self, true_w: float) -> float:
        """A power as the agent's instruments read it: with ``[sensors] power_noise_pct`` of noise (one standard
        deviation of the value, seeded with the scenario), never below zero."""
        noise = self.sc.power_noise_pct / 100.0
        if noise <= 0 or true_w == 0:
            return float(true_w)
        return max(0.0, float(true_w) * (1.0 + noise * float(self.sensor_rng.normal())))

    def _measured_bus_v(self) -> float:
        """The bus voltage as the agent's instruments read it: ``[sensors] bus_voltage_noise_v`` of noise (seeded)."""
        noise_v = self.sc.bus_voltage_noise_v
        true_v = float(self.battery.voltage_v)
        return max(0.0, true_v + noise_v * float(self.voltage_rng.normal())) if noise_v > 0 else true_v

    def _record(self, t: float, row: dict[str, float], board_w: float, platform_w: float, duty: float,
                mode_name: str, mode: str, work: float, up: bool) -> None:
        tr = self.trace
        tr.time_s.append(t)
        tr.soc_pct.append(self.battery.soc_pct)
        tr.bus_voltage_v.append(self.battery.voltage_v)
        tr.solar_power_w.append(row["solar_power_w"])
        tr.solar_delivered_w.append(self._delivered_w(row["solar_power_w"], platform_w + board_w))
        tr.board_power_w.append(board_w)
        tr.platform_load_w.append(platform_w)
        tr.temp_board_c.append(self.thermal.board_temp_c)
        tr.temp_radiator_c.append(self.thermal.radiator_temp_c)
        tr.power_mode.append(mode_name)
        tr.mode.append(mode)
        tr.duty.append(duty)
        tr.work.append(work)
        tr.unserved_wh.append(self._unserved_wh)
        tr.shadow_factor.append(row.get("shadow_factor", 1.0))
        tr.absorbed_w.append(float(self.thermal.params.absorbed_w(row.get("shadow_factor", 1.0), row.get("albedo_w_m2"),
                                                                  row.get("earth_ir_w_m2"))))
        tr.proton_flux_cm2_s.append(row.get("proton_flux_cm2_s", 0.0))
        tr.agent_up.append(up)
        threads = self.client.latest.get("compute_threads") if self.client is not None else None
        tr.compute_threads.append(float(threads[0]) if threads and threads[0] is not None else math.nan)

    # --- commands and faults ----------------------------------------------------------------

    def _send_command(self, cmd: Any, rel_s: float) -> None:
        entry: dict[str, Any] = {"at_s": rel_s, "command": cmd.command, "args": cmd.args, "outcome": "not sent"}
        packet, cmd_id = self.client.codec.encode_command(cmd.command, cmd.args)
        hit = self._packet_faults.popleft() if self._packet_faults else None
        if hit is not None:
            hit["command_index"] = len(self.command_log)  # the entry this command's is about to be
            hit["note"] = f"hit {cmd.command} sent at {rel_s:.0f} s"
            entry["fault_at_s"] = hit["at_s"]
        if hit is not None and hit["kind"] == "packet_corrupt":
            bad = bytearray(packet)
            bad[len(bad) // 2] ^= 0x10
            self.client.link.send(bytes(bad))
            entry["fault"] = "first copy corrupted"
        elif hit is not None:
            entry["fault"] = "first attempt dropped"
            send = self.client.link.send
            self.client.link.send = lambda p: (setattr(self.client.link, "send", send), True)[1]  # lose one packet
        try:
            result = self.client.send(cmd.command, cmd.args, timeout_s=20, attempt_timeout_s=0.5, cmd_id=cmd_id)
            entry["outcome"] = result.outcome
            entry["attempts"] = result.attempts
        except CommandTimeout as exc:  # "unknown" (acknowledged, outcome not come) or "timeout" (never acknowledged)
            outcome = exc.result.outcome if exc.result is not None else "timeout"
            entry["outcome"] = f"{outcome}: {exc}"
            if exc.result is not None:
                entry["attempts"] = exc.result.attempts
        self.command_log.append(entry)

    def _drawn_faults(self, t0: float, n_steps: int) -> list[FaultSpec]:
        """Upsets drawn from the profile's rate (x fault_rate_scale), seeded: SEUs and some reboots (SEFIs)."""
        if self.sc.fault_rate_scale <= 0 or self.sc.agent == "naive":
            return []
        drawn, self.faults_not_drawn = drawn_faults(lambda rel_s: self._mean_rate(rel_s) * self.sc.fault_rate_scale,
                                                    n_steps, self.sc.step_s, self.rng)
        if drawn:
            self.notes.append(f"{len(drawn)} upsets drawn from the profile's rate x {self.sc.fault_rate_scale}")
        if self.faults_not_drawn:
            self.notes.append(f"{self.faults_not_drawn} more drawn past {MAX_DRAWN_FAULTS_PER_STEP} a step were not "
                              "applied (lower fault_rate_scale): the run fails on it")
        return drawn

    def _apply_fault(self, f: FaultSpec, t: float, rel_s: float) -> None:
        """Break what the fault says; its log entry says what was hit (``note``), for the judge (hil/faults.py)."""
        entry: dict[str, Any] = {"at_s": rel_s, "kind": f.kind, "duration_s": f.duration_s}
        if f.kind in ("sensor_dropout", "sensor_stuck"):
            entry["zone"] = f.zone
        if f.kind == "sensor_stuck":
            entry["value"] = f.value
        if f.kind == "brownout":
            entry["energy_wh"] = f.energy_wh
        if id(f) in self._drawn:
            entry["drawn"] = True  # from [radiation] fault_rate_scale, not a [[faults]] entry
        self.fault_log.append(entry)
        if self.sc.agent == "naive":
            entry["note"] = "not applied: the naive baseline has no agent to break"
            return
        if self._died_at_s is None and not self._agent_alive():  # died since its last step: a reboot must not hide it
            self._agent_died()
        if self._died_at_s is not None:
            entry["note"] = f"not applied: the agent's process had died at {self._died_at_s:.0f} s"
            return
        if f.kind in ("reboot", "brownout"):
            # a stopped worker gets its parent's death signal only once it runs again
            self._resume_hung(f"its agent was killed for the {f.kind}")
            self.agent.kill()
            if f.kind == "brownout":
                # What the battery cannot give of the brownout's draw counts as not supplied (found in audit: it
                # was dropped, and battery_never_empty never saw it).
                self._unserved_wh += self.battery.step(-f.energy_wh * 3600.0 / max(f.duration_s, 1.0),
                                                       max(f.duration_s, 1.0)).unserved_wh
                # One that comes while an earlier brownout still holds the bus down ends no sooner than it (found
                # in audit: the later, shorter one brought the agent back early).
                self._agent_down_until = max(self._agent_down_until, t + f.duration_s)
            try:
                self._start_agent()  # a real restart; under a brownout it only hears the world again later
            except AgentDied:
                self._agent_died()
            except TimeoutError as exc:  # alive and mute (found in review: the run ended as an internal error)
                if not self._agent_alive():  # it exited while the ground pinged it: its exit code, not a kill
                    self._agent_died()
                else:
                    self._resume_hung(f"its agent, restarted by the {f.kind}, was killed, mute")
                    self.agent.kill()
                    mute = (f"never said hello within {HELLO_TIMEOUT_S:g} s" if isinstance(exc, AgentSilent)
                            else f"never answered the ground's ping within {PING_TIMEOUT_S:g} s")
                    self._agent_died(f"restarted by the {f.kind} at {rel_s:.0f} s, it {mute}, and the harness "
                                     "killed it")
        elif f.kind == "sensor_dropout":
            self._zone_faults[f.zone] = (t + f.duration_s, None)
        elif f.kind == "sensor_stuck":
            self._zone_faults[f.zone] = (t + f.duration_s, f.value)
        elif f.kind == "los":  # overlapping ones: the signal returns when the last of them ends (found in audit:
            self._los_until = max(self._los_until, t + f.duration_s)  # a shorter later one brought it back early)
        elif f.kind in ("packet_corrupt", "packet_drop"):
            entry["note"] = f"{PACKET_FAULT_UNSENT} before the run ended"
            self._packet_faults.append(entry)  # the note says otherwise once a command takes it
        elif f.kind == "compute_hang":
            pid = (self.client.latest.get("compute_pid") or (0,))[0] if self.client else 0
            agent_pid = self.agent.proc.pid if self.agent is not None and self.agent.proc is not None else None
            if pid and _process_parent(pid) == agent_pid:  # this agent's worker, never a pid from stale housekeeping
                tag = _process_start_tag(pid)  # (found in audit: after a reboot, the old worker's pid was stopped)
                try:
                    os.kill(pid, signal.SIGSTOP)  # the watchdog must notice and restart it
                    entry["pid"] = pid
                    entry["note"] = f"worker {pid} stopped (SIGSTOP)"
                    held = [h[3] for h in self._hung if h[1] == pid and h[2] == tag]
                    if held:  # stopped already by a hang still in force: to the agent one hang, from the first
                        entry["stopped_since_s"] = min(h.get("stopped_since_s", h["at_s"]) for h in held)
                    # duration_s 0: hung until the watchdog acts; else it resumes by itself after duration_s. Either
                    # way kept, so that it is resumed before the agent is killed and at the end (found in audit: a
                    # stopped worker whose agent was killed outlived the run, its SIGTERM pending).
                    self._hung.append((rel_s + f.duration_s if f.duration_s > 0 else math.inf, pid, tag, entry))
                except ProcessLookupError:
                    entry["note"] = f"worker {pid} had already gone: nothing to hang"
            else:
                entry["note"] = ("no compute worker of this agent running: nothing to hang" if not pid else
                                 f"worker {pid} of the housekeeping is not this agent's ({agent_pid}): nothing to hang")
        elif f.kind == "seu_weights":
            # The store the worker loads from (flight/compute/store.py: ModelStore(compute_dir / "models")):
            # the working copies only, never golden/. The store checks a model's SHA-256 when it loads it,
            # so the flip is found at the next load (a new worker, or new sessions for new thread counts).
            entry["note"] = _flip_model_bit(self.workdir / "state" / "compute" / "models", self.rng)

    def _end_hangs(self, rel_s: float) -> None:
        """Resume (SIGCONT) the workers whose compute_hang has lasted its duration_s, if still the same process.

        Overlapping hangs on one worker end when the last of them ends, as overlapping ``los`` faults do
        (found in audit: a shorter hang inside a longer one resumed the worker while the longer one still
        held it, and the longer one's record then said it resumed it): one that ends while another still
        holds the same process is held on to that one's end, its record saying so, and ``resumed_at_s``
        is when the process really ran again.

        A hang until the watchdog acts (``duration_s`` 0, or one held on by such a hang) has no end of its own: its
        record says when the harness found its process gone, replaced by the agent (found in audit: it said
        nothing, where a hang of positive duration said its worker had been replaced)."""
        for h in [h for h in self._hung if not math.isfinite(h[0])]:
            _until, pid, tag, entry = h
            if tag is None or _process_start_tag(pid) != tag:
                held = entry["held"] + "; " if "held" in entry else ""
                entry["resumed"] = held + f"not resumed: worker {pid} was replaced by {rel_s:.0f} s"
                entry["replaced_by_s"] = rel_s
                self._hung.remove(h)
        due = [h for h in self._hung if h[0] <= rel_s]
        self._hung = [h for h in self._hung if h[0] > rel_s]
        for _until, pid, tag, entry in due:
            held = entry["held"] + "; " if "held" in entry else ""
            if tag is None or _process_start_tag(pid) != tag:  # gone, or the pid is another process now
                entry["resumed"] = held + f"not resumed at {rel_s:.0f} s: worker {pid} was already replaced"
                continue
            holder = max((h for h in self._hung if h[1] == pid and h[2] == tag), key=lambda h: h[0], default=None)
            if holder is not None:  # the same process, still hung by another: no SIGCONT yet
                until = holder[0]
                entry["held"] = (f"held on at {rel_s:.0f} s by the compute_hang at {holder[3]['at_s']:.0f} s"
                                 + (f" to {until:.0f} s" if math.isfinite(until) else " (hung until replaced)"))
                entry["held_until_s"] = until if math.isfinite(until) else None  # None: until the watchdog acts
                entry["resumed"] = entry["held"]
                self._hung.append((until, pid, tag, entry))
                continue
            try:
                os.kill(pid, signal.SIGCONT)
                entry["resumed"] = held + f"resumed (SIGCONT) at {rel_s:.0f} s"
                entry["resumed_at_s"] = rel_s
            except ProcessLookupError:
                entry["resumed"] = held + f"not resumed at {rel_s:.0f} s: worker {pid} was already gone"

    def _mean_rate(self, rel_s: float) -> float:
        """The profile's upset rate averaged over the step from ``rel_s`` (a profile without the column
        has it filled with zeros when it is read)."""
        return self.profile.mean("upset_rate_per_s", rel_s, self.sc.step_s)

    def _memory_upsets(self, row: dict[str, Any], rel_s: float) -> None:
        """The truth's upsets into the worker's memory this step: Poisson(``row``'s rate, the profile's
        averaged over the step, x scale x step),
        each into a target drawn from [radiation] memory_targets, asked of the worker as a request
        file it takes in (flight/compute/inject.py); the bit and the place are the worker's draw
        from the seed given here."""
        sc = self.sc
        lam = float(row.get("upset_rate_per_s", 0.0)) * sc.memory_upset_scale * sc.step_s
        n = _poisson(self.memory_rng, lam)
        if n > MAX_MEMORY_UPSETS_PER_STEP:  # a file each: said, and the run's criterion fails on it
            self.memory_not_written += n - MAX_MEMORY_UPSETS_PER_STEP
            n = MAX_MEMORY_UPSETS_PER_STEP
        if not n:
            return
        requests = self.workdir / "state" / "compute" / INJECT_DIR
        requests.mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            target = sc.memory_targets[self.memory_rng.randrange(len(sc.memory_targets))]
            self.memory_requested[target] = self.memory_requested.get(target, 0) + 1
            self._memory_count += 1
            write_checked_json(requests / f"u{self._memory_count:06d}.json",
                               {"target": target, "seed": self.memory_rng.getrandbits(31), "at_s": rel_s})

    def _memory_account(self) -> dict[str, Any]:
        """What was asked of the worker, and its ledger's account (written as it went; read once the
        agent and its worker have stopped)."""
        account: dict[str, Any] = {"scale": self.sc.memory_upset_scale, "targets": list(self.sc.memory_targets),
                                   "requested": dict(self.memory_requested), "not_written": self.memory_not_written,
                                   "per_step_max": MAX_MEMORY_UPSETS_PER_STEP}
        requests = self.workdir / "state" / "compute" / INJECT_DIR
        path = requests / INJECT_LEDGER
        account["ledger_error"] = None  # why there is no ledger to judge by (the criterion fails on it)
        try:
            ledger = read_checked_json(path)
        except CorruptFile as exc:
            if self._memory_count:
                self.notes.append(f"memory upsets: no ledger from the worker ({exc})")
            account["ledger_error"] = str(exc)
            ledger = {"totals": {}, "upsets": []}
        account["totals"] = ledger.get("totals", {})
        account["batches"] = ledger.get("batches", {})  # each judged batch once: distinct corrupt tiles
        account["bad_requests"] = ledger.get("bad_requests", 0)
        listed = {u.get("id") for u in ledger.get("upsets", []) if isinstance(u, dict)}
        try:  # requests the worker never took in (it was down, or the run ended first); not those it lists
            now = time.time()
            ages = [now - p.stat().st_mtime for p in requests.glob("u*.json") if p.stem not in listed]
        except OSError:
            ages = []
        account["unread"] = len(ages)
        # The worker takes requests at each turn of its loop (a second at most): one waiting longer was
        # never going to be taken (the worker hung, or was gone), and the criterion fails on it.
        account["unread_stale"] = sum(age > UNREAD_GRACE_S for age in ages)
        account["unread_grace_s"] = UNREAD_GRACE_S
        # the worker's limits and failures: the criterion reads them
        for key in ("dropped", "unjudged", "restarts", "ledgers_lost"):
            account[key] = ledger.get(key, 0)
        account["errors"] = ledger.get("errors", [])[:20]
        upsets = ledger.get("upsets", [])
        account["reported_good_while_corrupt"] = [u for u in upsets if u.get("corrupt_passed")][:20]
        account["examples"] = upsets[:10]
        return account

    def _capture(self, k: int) -> None:
        """Play the payload camera: a file of generated tiles lands in the agent's incoming/ directory."""
        from flight.compute.usecase.cloud import generate_tiles

        incoming = self.workdir / "state" / "compute" / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        tiles, _fraction, _labels = generate_tiles(self.sc.tiles_per_capture, seed=self.sc.seed * 100_003 + k)
        tmp = incoming / f".capture-{k:06d}.npy"
        np.save(tmp, tiles.astype(np.float32))
        os.replace(tmp, incoming / f"capture-{k:06d}.npy")  # appears whole, as the worker expects

    def _resume_hung(self, why: str = "the run ended") -> None:
        """SIGCONT every worker a compute_hang stopped that is still that process: never a stopped process left.

        ``why``: its agent is about to be killed, or the run ended. The hang's record says so (``cut_at_s``): the
        harness, not the agent's watchdog, ended it, and the judge says that where no COMPUTE_HUNG came (found in
        audit: a hang a reboot cut short was failed as the watchdog's miss, its record silent)."""
        for _until, pid, tag, entry in self._hung:
            if tag is not None and _process_start_tag(pid) == tag:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    continue
                held = entry["held"] + "; " if "held" in entry else ""
                entry["resumed"] = held + f"resumed (SIGCONT) at {self._rel_s:.0f} s: {why}"
                entry["cut_at_s"] = self._rel_s
        self._hung = []

    def _shutdown(self) -> int | None:
        real = None
        self._resume_hung()
        if self.agent is not None and self._died_at_s is None and not self._agent_alive() and self.agent.proc:
            self._agent_died()  # it died in the last steps, held down (a brownout past the end): said, and judged
        if self.client is not None:
            self.client.poll(0.5)
            value = self.client.latest.get("infer_count")
            real = int(value[0]) if value and value[0] is not None else None
        if self.agent is not None:
            self.agent.stop()
        if self.client is not None:
            self.client.poll(0.2)
            self.client.close()
        if self.env is not None:
            self.env.close()
        if self.proxy is not None:
            self.proxy.close()  # last, after the client's last packets: raises if the proxy had failed
        return real


def step_of(at_s: float, step_s: float) -> int:
    """The step that takes what is due at ``at_s``: the first whose start is not before it, as
    hil/scenario.py pairs packet faults with commands. By index, not by ``k * step_s <= at_s``: with a
    step such as 0.03 s, 11 x 0.03 is 0.32999999999999996, and a fault at the run's end, 0.33 s, never came
    (found in audit: it was left out of the fault log in silence, so nothing judged it)."""
    return math.ceil(at_s / step_s - 1e-9)


_POISSON_DIRECT_MAX = 500.0  # past this, exp(-lam) nears float underflow: the direct product method tops out ~745


def drawn_faults(rate_per_s: Callable[[float], float], n_steps: int, step_s: float,
                 rng: random.Random) -> tuple[list[FaultSpec], int]:
    """Upsets drawn over ``n_steps`` steps, Poisson at ``rate_per_s(rel_s)`` times the step in each, a
    tenth of them reboots (SEFIs: FACTS.md, uncertain), the rest SEUs: (the faults, those drawn past
    :data:`MAX_DRAWN_FAULTS_PER_STEP` in a step and left out). Bounded so that a large
    ``fault_rate_scale`` cannot hold the whole run's faults in memory before the first step (found in
    review: 1e6 drew 570,123 for one orbit; 1e9, the largest accepted, would have drawn ~5.7e8)."""
    drawn: list[FaultSpec] = []
    past = 0
    for k in range(n_steps):
        rel_s = k * step_s
        n = _poisson(rng, rate_per_s(rel_s) * step_s)
        if n > MAX_DRAWN_FAULTS_PER_STEP:
            past += n - MAX_DRAWN_FAULTS_PER_STEP
            n = MAX_DRAWN_FAULTS_PER_STEP
        for _ in range(n):
            drawn.append(FaultSpec(rel_s, "reboot" if rng.random() < 0.1 else "seu_weights"))
    return drawn, past


def _poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw with mean ``lam`` from ``rng``: Knuth's product method up to
    :data:`_POISSON_DIRECT_MAX` (the seeded runs' draws as they always were), numpy's beyond, seeded
    from ``rng`` (the product method's ``exp(-lam)`` underflows near 745, and every draw came out ~745)."""
    if lam <= 0:
        return 0
    if lam > _POISSON_DIRECT_MAX:
        return int(np.random.default_rng(rng.getrandbits(64)).poisson(lam))
    n, p, threshold = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= threshold:
            return n
        n += 1


def _process_parent(pid: int) -> int | None:
    """The process's parent pid (/proc/PID/stat field 4), None if it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _process_start_tag(pid: int) -> str | None:
    """The process's start time (/proc/PID/stat field 22): tells a pid from a later process given the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _flip_model_bit(models_dir: Path, rng: random.Random) -> str:
    files = sorted(p for p in models_dir.glob("*.onnx")) if models_dir.exists() else []
    if not files:
        return "no model on the store yet: the upset hit nothing the harness can see"
    path = files[rng.randrange(len(files))]
    raw = bytearray(path.read_bytes())
    pos = rng.randrange(len(raw))
    raw[pos] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(raw))
    return f"bit flipped in {path.name} at byte {pos}"
