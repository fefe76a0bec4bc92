"""The flight agent: wiring of the components, and the loop.

The components (flight/agent/*.py) each own their commands, events and telemetry and are
given only the ports they need; this module builds them, connects them, checks that
together they cover the dictionary exactly (:func:`flight.agent.ports.check_wiring`), and
runs the loop.

The loop is driven by events, never by sleeps: each turn waits in ``zmq.Poller`` on the
link's sockets or file descriptors, the compute worker's socket, the harness's socket (sim
backend) and a signal wake-up pipe, for at most the time until the next timer is due, as the
clock says. Nothing a packet contains can stop the loop: bad packets are counted and
reported, handler errors fail their command, anything else is caught, counted and reported.

Two waits read the wall clock whatever the agent's clock is, both bounds on waiting for a
real process, never a decision: systemd's watchdog feed (systemd's timer is wall time) and,
under lockstep, how long a step may wait for the compute worker to answer its ping.
"""

from __future__ import annotations

import math
import re
import signal
import socket
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import zmq

from flight import sdnotify
from flight.agent.compute import WORKER_LOG, ComputeSupervisor, radiation_estimate
from flight.agent.contacts import Contacts
from flight.agent.control import Controller, PowerSetup
from flight.agent.dispatcher import DispatchCounters, Dispatcher
from flight.agent.downlink import Downlink
from flight.agent.executive import EXIT_STAY_DOWN, Executive
from flight.agent.files import FileManager
from flight.agent.housekeeping import Housekeeping
from flight.agent.journal import CommandJournal
from flight.agent.keys import KeyManager
from flight.agent.link_service import LinkService
from flight.agent.mode_manager import ModeManager
from flight.agent.modes import Conditions
from flight.agent.params import Parameters, ParameterStore
from flight.agent.ports import Component, EventPort, FaultLog, check_wiring
from flight.agent.scheduler import Scheduler
from flight.agent.state import PersistentState
from flight.agent.timers import Timers
from flight.agent.tm_store import PacketStore, StoreError
from flight.config import Config, board_limit_problem, check_board_limits
from flight.hal.base import Board, HalError, open_board
from flight.link.apid import Apid
from flight.link.definitions import DICTIONARY, Admission, Mode
from flight.link.dictionary import Dictionary
from flight.link.interface import FlightLink
from flight.link.messages import Codec, PlanRecord
from flight.link.packets import unpack
from flight.link.sdls import KeyOverlay, KeyRing, ReplayGuard, TelemetrySealingLink, TmEpoch
from flight.link.transport import open_flight_link
from flight.storage import DirectoryLock, remove_interrupted_writes

# Feed systemd's watchdog at most this often (and at least every half period it asks for).
_WATCHDOG_FEED_MAX_S = 1.0
_EARLY_EVENTS_MAX = 64  # events held before time begins (the worker's few): past it, dropped and counted
_JOB_FILE = re.compile(r"^job(\d{1,9})[.-]")  # a product's or checkpoint's name (flight/compute/worker.py)


def _highest_job_id(compute_dir: Path) -> int:
    """The highest job id a product or checkpoint in ``compute_dir`` names (0: none)."""
    highest = 0
    for top in ("products", "checkpoints"):
        try:
            names = [p.name for p in (compute_dir / top).iterdir()]
        except OSError:
            continue
        for name in names:
            found = _JOB_FILE.match(name)
            if found:
                highest = max(highest, int(found.group(1)))
    return highest


_DISPATCH_COUNTERS = ("accepted", "rejected", "executed", "failed", "duplicates")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Signals that stop the agent cleanly from the moment it is built: kill PID (systemd), and its terminal closed
(SIGHUP, found in audit: it killed the agent, its state not saved, the stop said unclean at the next start). A
SIGHUP ignored when the agent is built (``nohup``) stays ignored. SIGINT joins them once the loop runs: before,
Ctrl-C ends the start (exit 130, AGT-018)."""


class Agent:
    def __init__(
        self,
        config: Config,
        link: FlightLink | None = None,
        board: Board | None = None,
        dictionary: Dictionary = DICTIONARY,
    ):
        """Build the agent for ``config``. ``link`` and ``board`` replace what the config names
        (tests build an agent in-process with a memory link and a scripted board)."""
        self.config = config
        self.dictionary = dictionary
        self.state_dir = Path(config.state_dir)
        # First the lock: a second agent on this state directory stops here, touching nothing.
        self._lock = DirectoryLock(self.state_dir, ".agent.lock", "agent")
        self._opened: list[Any] = []  # what this constructor opened, closed if it fails half-way
        self._signals_before: dict[int, Any] = {}  # handlers the agent replaced, put back by close()
        try:
            self._build(config, link, board, dictionary)
        except BaseException:
            self._restore_signals()
            for thing in reversed(self._opened):
                thing.close()
            self._lock.release()
            raise

    def _build(self, config: Config, link: FlightLink | None, board: Board | None, dictionary: Dictionary) -> None:
        self._removed = remove_interrupted_writes(self.state_dir)
        self.board = board or open_board(config.hal_backend, config.board_options())
        self._opened.append(self.board)
        rule = None
        if self.board.profile is not None:  # one detected (jetson) or the sim's default: unknown to the config
            said = "named by hal.board" if config.board else f"chosen by the {self.board.backend} backend"
            check_board_limits(config, self.board.profile, said)
            # SET_PARAM and saved values keep it too (found in audit: only the config was held to it)
            rule = partial(board_limit_problem, profile=self.board.profile, said=said, advice="keep {name} below it")
        # A serial device not there yet (a USB adapter still enumerating) is tried again each second, said and
        # counted: the agent runs, and stores its telemetry, without its link (an audit: it did not start)
        self.link = link or open_flight_link(config.link_url, curve=config.link_curve(), wait_for_device=True)
        self._opened.append(self.link)
        self.clock = self.board.clock
        self.codec = Codec(dictionary, Apid.AGENT)
        self.faults = FaultLog(self.clock)
        self._stop_reason: str | None = None
        self._finished = False  # finish() ran: the stop was clean, and its state saved so
        self.exit_status = EXIT_STAY_DOWN
        self._booted = False
        # Events said before time begins (lockstep: the worker's hello, at a clock still at 0) are sent at boot,
        # stamped with its time (an audit: a HIL report listed COMPUTE_STARTED at -1795478400 s)
        self._early_events: list[tuple[str, dict[str, Any]]] = []
        self._early_dropped = 0  # events past _EARLY_EVENTS_MAX, said as EARLY_EVENTS_DROPPED at boot
        stepper = self.board.stepper
        self.lockstep = stepper is not None and stepper.lockstep

        def events(component: type[Component]) -> EventPort:
            return EventPort(component.NAME, component.EVENTS, dictionary, self._publish_event)

        # --- components ---
        self.memory = PersistentState(self.state_dir / "state.json", self.clock)
        keys = KeyRing.load(config.tc_keys) if config.tc_keys is not None else None
        tm_slot = keys.telemetry_slot() if keys is not None and config.tm_auth else None
        self.tm_epoch = TmEpoch(self.state_dir / "tm_epoch.json", self.memory.boot_count, self.clock.now_s) \
            if tm_slot is not None else None
        if tm_slot is not None:  # sealed as it leaves, whoever sends it (flight/link/sdls.py)
            self.link = TelemetrySealingLink(self.link, tm_slot, self.tm_epoch.epoch)
        self._link_taken = 0  # packets taken from the link since start (not reset by RESET_COUNTERS)
        if stepper is not None:  # under HIL the harness's ground packets are ordered with its steps
            stepper.attach_link(lambda: self._link_taken)
        counters = self.memory.counters  # types checked when the state file was read
        # The config's [rates] hk_period_s is the parameter's start-up value unless [parameters] says otherwise.
        store = ParameterStore(dictionary, self.state_dir / "params.json",
                               {"hk_period_s": config.hk_period_s, **config.parameters}, rule)
        self.params = Parameters(store, events(Parameters), self._publish_param_report)
        packets, store_error = None, None
        self._store_unreadable: list[str] = []  # segment files of the store the disk could not give back
        try:
            # its own interrupted writes too (acks.log, enabled.json: an audit found them left at each power cut)
            self._removed += remove_interrupted_writes(config.store_dir or self.state_dir / "store")
            packets = PacketStore(config.store_dir or self.state_dir / "store", int(config.store_max_mb * 1024 * 1024))
            self._opened.append(packets)
            self._store_unreadable = packets.unreadable_segments
        except (StoreError, OSError) as exc:  # the agent flies without it: live only, and says so
            store_error = f"{config.store_dir or self.state_dir / 'store'}: {exc}"
        self.downlink = Downlink(self.link, packets, self.codec.encode_playback, self.clock, events(Downlink), self.params,
                                 store_error, fsync=config.store_fsync,
                                 sync_journal=lambda: self.dispatcher.end_turn())
        self._on_board_command = False  # a time tag or a sequence step is being dispatched (_dispatch_internal)
        self.modes = ModeManager(events(ModeManager), self._conditions, self.memory, self.clock, self.params,
                                 lambda: self._on_board_command)
        self.dispatcher = Dispatcher(self.codec, self.downlink.reply,
                                     self.clock.now_s, events(Dispatcher),
                                     DispatchCounters(**{n: int(counters.get(f"cmd_{n}", 0)) for n in _DISPATCH_COUNTERS}),
                                     CommandJournal(self.state_dir / "commands.journal"),
                                     lambda where, exc: self.executive.internal_error(where, exc))
        self.key_overlay = KeyOverlay(self.state_dir / "tc_keys_state") if keys is not None else None
        self._key_problems: list[str] = []
        if keys is not None and self.key_overlay is not None:
            self.key_overlay.read()
            self._key_problems = self.key_overlay.apply(keys)
            if self.key_overlay.load_error:
                self._key_problems.insert(0, self.key_overlay.load_error)
        # Written once before: a replay window that is not there was lost, not never made (flight/link/sdls.py).
        # A state file that could not be read cannot say it was not: then it is taken as lost too.
        replay_expected = self.memory.tc_replay_kept or self.memory.file.load_error is not None
        self.replay = ReplayGuard(self.state_dir / "tc_replay.json", expected=replay_expected) \
            if keys is not None else None
        if self.replay is not None and self.replay.kept:
            self.memory.remember_tc_replay_kept()
        self.link_service = LinkService(self.link, self.codec, self.clock, events(LinkService), self.dispatcher.handle,
                                        counters, self.downlink.reply, self.downlink.acknowledged,
                                        lambda pdu: self.files.receive(pdu), keys, self.replay)
        self.keys = KeyManager(events(KeyManager), keys, self.key_overlay, self.link_service.sealed_with)
        self.timers = Timers(self.clock)
        self.executive = Executive(
            events(Executive), self.clock, self.faults, self.modes, boot_count=self.memory.boot_count,
            dict_hash=dictionary.version_hash, hal_backend=self.board.backend,
            control_late_p99_s=lambda: self.timers.late_p99_s("control"), stop=self.stop,
            resets=(self.dispatcher.reset_counters, self.link_service.reset_counters,
                    self.params.store.forget_refused,
                    lambda: self.scheduler.reset_counters()))  # made below
        compute_on = config.compute_enabled if config.compute_enabled is not None else not self.lockstep
        compute_dir = config.compute_dir or self.state_dir / "compute"
        self.memory.job_ids_above(_highest_job_id(compute_dir))
        self.files = FileManager(compute_dir, self.state_dir, self.link, self.codec.encode_file_pdu_tm, self.clock,
                                 events(FileManager), self.params, self.link_service.contact_age_s,
                                 auto_skip=frozenset({WORKER_LOG}),  # the live log: its rotated copies go instead
                                 # a job's checkpoint, data set; the running sequence's file
                                 in_use=lambda name: self.scheduler.file_in_use(name) or self.compute.file_in_use(name),
                                 sequence_check=lambda name, path: self.scheduler.check_upload(name, path),
                                 # written before (or the state that says so unreadable): one missing now was lost
                                 transfers_expected=self.memory.file_transfers_kept
                                 or self.memory.file.load_error is not None)
        if (self.state_dir / "files.json").exists():  # written (a full disk refuses it: a review, a loss said later
            self.memory.remember_file_transfers_kept()  # of what was never written); else tried at the next start
        self.compute = ComputeSupervisor(compute_dir, compute_on,
                                         events(ComputeSupervisor), self.faults, self.clock, self.params,
                                         self.memory.allocate_job_id, self.executive.internal_error,
                                         lockstep=self.lockstep, trusted_keys=config.trusted_keys,
                                         allow_unsigned=config.allow_unsigned_models,
                                         upset_injection=config.compute_upset_injection,
                                         gpu_tf32=config.compute_gpu_tf32,
                                         disk_refusal=self.files.disk_refusal,
                                         radiation=lambda: radiation_estimate(self.controller.orbit,
                                                                              self.clock.now_s(),
                                                                              self.controller.saa_drift()))
        self._opened.append(self.compute)
        self.controller = Controller(
            self.board, PowerSetup(config.battery_capacity_wh, config.platform_load_w, config.bench_supply,
                                   config.control_period_s, config.array),
            self.params, events(Controller), self.modes, self.faults, self.clock, self.link_service.contact_age_s,
            self.compute.admit, self.memory, self.executive.internal_error, config.tle, self._publish_plan)
        self.scheduler = Scheduler(self.state_dir, self.clock, events(Scheduler), self._dispatch_internal,
                                   lambda: self.housekeeping.values(), self._power_mode_names)
        self.dispatcher.on_final.append(self.scheduler.command_final)
        self.contacts = Contacts(config.stations, lambda: self.controller.orbit, self.clock, events(Contacts),
                                 self.executive.internal_error)
        self.components: tuple[Component, ...] = (self.executive, self.modes, self.params, self.dispatcher,
                                                  self.link_service, self.downlink, self.scheduler, self.contacts,
                                                  self.controller, self.compute, self.files, self.keys)
        check_wiring(dictionary, self.components)
        for component in self.components:
            for name, handler in component.handlers().items():
                self.dispatcher.register(name, handler)
        self.housekeeping = Housekeeping(dictionary, self.codec, self.downlink.publish, self.clock.now_s, self.components,
                                         self.params.report)

        # --- ports between them ---
        self.modes.on_commanded.append(self.controller.tick)  # apply the new mode's plan now, not next tick
        self.modes.on_change.append(lambda old, new: self._booted and sdnotify.status(self._systemd_status()))
        self.params.on_change.append(self._param_changed)

        # --- timers and the loop's inputs ---
        self.timers.every("housekeeping", self.params["hk_period_s"], self._housekeeping)
        self.timers.every("control", config.control_period_s, self._control)
        self._poller = zmq.Poller()
        self._link_items: list[Any] = []
        self._register_link()
        for item in [*(stepper.pollables() if stepper else []), *self.compute.pollables()]:
            self._poller.register(item, zmq.POLLIN)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._poller.register(self._wake_r.fileno(), zmq.POLLIN)
        # The systemd watchdog runs on the wall clock, whatever the agent's clock: fed from the
        # loop itself, so a hung loop (not just a dead process) gets the agent restarted. Fed at
        # the start and the end of every turn, at most once a second: a slow turn (nvpmodel
        # calls time out after 10 s) then costs a restart only if it alone outlasts the period.
        period_s = sdnotify.ping_interval_s()
        self._watchdog_every_s = None if period_s is None else min(period_s, _WATCHDOG_FEED_MAX_S)
        self._watchdog_fed_s = -math.inf
        self._changes_saved = 0  # the dispatcher's changes as of the last state save
        # From the first write that says the agent runs, a stop signal is a stop asked, not a kill (found in audit:
        # a SIGTERM between this save and the loop's start, as systemd stops a starting agent, killed it, and the
        # next start said previous_stop unclean and could leave SAFE on its own)
        self._signals_before = self._catch_stop_signals(STOP_SIGNALS)
        self._save_state(force=True)

    # --- ports the agent itself provides -------------------------------------------------

    def _publish_event(self, name: str, args: dict[str, Any]) -> None:
        if not self._booted:
            if len(self._early_events) < _EARLY_EVENTS_MAX:
                self._early_events.append((name, args))
            else:
                self._early_dropped += 1
            return
        self.downlink.publish(self.codec.encode_event(name, args, self.clock.now_s()))

    def _publish_param_report(self, values: dict[str, Any]) -> None:
        self.downlink.publish(self.codec.encode_param_report(values, self.clock.now_s()))

    def _publish_plan(self, plan: PlanRecord) -> None:
        self.downlink.publish(self.codec.encode_plan(plan, self.clock.now_s()))

    def _conditions(self) -> Conditions:
        """What the mode guards look at, from the controller's latest readings; contact as it is now, not as of the
        last tick (a time tag released between two ticks found it not lost yet, and took the agent out of SAFE)."""
        p = self.params
        last = self.controller.last
        contact_lost = self.link_service.contact_age_s() > p["contact_timeout_s"]  # control_core's rule
        return Conditions(self.controller.eps.soc_pct, p["battery_floor_pct"], last.temp_max_c if last else None,
                          p["thermal_soft_limit_c"], p["thermal_hard_limit_c"], p["thermal_hysteresis_c"],
                          last.decision.admission if last else None, contact_lost,
                          self.controller.state.governor.hard)

    def _control(self) -> None:
        """The control tick, then the mode manager's look at a pending recovery (on what the tick read)."""
        self.controller.tick()
        self.modes.review()
        self.contacts.tick()

    def _dispatch_internal(self, name: str, args: dict[str, Any], cmd_id: int) -> None:
        """A time-tagged command or a sequence step, through the dispatcher as a TC(8,1) of its own:
        the same checks, journal and verification reports (on the stream) as the ground's."""
        packet, _ = self.codec.encode_command(name, args, cmd_id)
        self._on_board_command = True  # the mode guard knows it is no command of the ground's
        try:
            self.dispatcher.handle(unpack(packet), None)
        finally:
            self._on_board_command = False

    def _power_mode_names(self) -> tuple[str, ...] | None:
        """The board's power-mode names, as SET_POWER_MODE looks them up, for the checks of time tags and sequence
        steps; None where the board cannot say now (they are then judged at release)."""
        try:
            return tuple(m.name for m in self.board.hal.power_modes())
        except HalError:
            return None

    def _param_changed(self, name: str, value: Any) -> None:
        if name == "hk_period_s":
            self.timers.set_period("housekeeping", value)
        elif name.startswith("saa_drift_"):  # the SAA model moved: its passes and state now, at the next tick
            self.controller.predict_again()

    def _housekeeping(self) -> None:
        self.housekeeping.send()
        self.link_service.report_drops()
        self.link_service.report_auth()
        self.link_service.report_bad_packets()
        self.downlink.report()
        try:
            self.files.housekeeping()
        except Exception as exc:  # noqa: BLE001
            self.executive.internal_error("files", exc)
        self._save_state()
        self.executive.state_writes(self.memory.write_failures, self.memory.write_error)

    def _counters(self) -> dict[str, int]:
        c = self.dispatcher.counters
        return {**{f"cmd_{n}": getattr(c, n) for n in _DISPATCH_COUNTERS}, **self.link_service.counters()}

    def _save_state(self, force: bool = False, stopping: bool = False) -> None:
        """The state file, its counters with it at once where a command that changes something ran since the
        last save; a read-only one's counts (a console's PINGs) wait for the periodic save."""
        changes = self.dispatcher.changes
        if self.link_service.contact_this_boot:  # else the kept time stands (no rewrite as the clock drifts)
            self.memory.note_contact(round(self.clock.now_s() - self.link_service.contact_age_s()))  # s: no churn
        # Drops carried from before the start, said now: written down at once, or a reset in the next minute says
        # them again at every start of a loop of resets (found in review)
        urgent = changes != self._changes_saved or self.link_service.said_carried_drops()
        if self.memory.save(self._counters(), force=force, stopping=stopping, urgent=urgent):
            self._changes_saved = changes

    @property
    def mode(self) -> Mode:
        return self.modes.mode

    # --- the loop --------------------------------------------------------------------------

    def _register_link(self) -> None:
        """(Re-)register the link's sockets or descriptors: a serial port reopened gets a new fd."""
        items = self.link.pollables()
        if items == self._link_items:
            return
        for item in self._link_items:
            try:
                self._poller.unregister(item)
            except KeyError:
                pass
        for item in items:
            self._poller.register(item, zmq.POLLIN)
        self._link_items = items

    def step(self, max_wait_s: float | None = 1.0) -> None:
        """One turn: wait for input or the next timer, handle what came, fire what is due."""
        self._register_link()
        stepper = self.board.stepper
        if self._watchdog_every_s is not None:
            self._feed_watchdog()
            # Never sleep past the next feed, whatever the caller asked (None: no limit).
            max_wait_s = self._watchdog_every_s if max_wait_s is None else min(max_wait_s, self._watchdog_every_s)
        # Before boot (lockstep, waiting for the harness) no timer is due: wait for I/O only.
        timeout_s = self.clock.timeout_until(self._next_due_s()) if self._booted else None
        hold_s = self.compute.hold_s() if stepper is not None and stepper.pending_step else None
        if hold_s is not None:  # a step waits for the worker's answer: wake at the latest when the hold ends
            timeout_s = hold_s if timeout_s is None else min(timeout_s, hold_s)
        link_hold_s = stepper.hold_s() if stepper is not None else None
        if link_hold_s is not None:  # a step waits for the harness's ground packets: wake when that hold ends
            timeout_s = link_hold_s if timeout_s is None else min(timeout_s, link_hold_s)
        if timeout_s is None or (max_wait_s is not None and timeout_s > max_wait_s):
            timeout_s = max_wait_s
        write_items = self.link.write_pollables() if self.link.wants_write() else []
        for item in write_items:
            self._poller.register(item, zmq.POLLIN | zmq.POLLOUT)
        # Round the wait up to the poller's millisecond, never down: waking early costs a turn,
        # and int(ms) + 1 would make every timer up to a millisecond late.
        ready = dict(self._poller.poll(None if timeout_s is None else math.ceil(timeout_s * 1000)))
        for item in write_items:
            self._poller.register(item, zmq.POLLIN)
        if self._wake_r.fileno() in ready:
            try:
                self._wake_r.recv(64)
            except BlockingIOError:
                pass
        received = self.link.receive()
        self._link_taken += len(received)
        for inbound in received:
            self.downlink.hold()  # a command's reports go out first, and are written to the store after
            try:
                self.link_service.handle(inbound)
            except Exception as exc:  # noqa: BLE001 - the last line of defence: count, report, carry on
                self.executive.internal_error("command input", exc)
            finally:
                try:
                    self.downlink.release()
                except Exception as exc:  # noqa: BLE001
                    self.executive.internal_error("downlink", exc)
        try:
            self.link_service.report_refused_frames()  # what the link refused before a packet: said, not only counted
        except Exception as exc:  # noqa: BLE001
            self.executive.internal_error("command input", exc)
        try:
            self.compute.receive()
        except Exception as exc:  # noqa: BLE001
            self.executive.internal_error("compute input", exc)
        if stepper is not None:
            try:
                if stepper.receive() and not self._booted:
                    self._boot()  # lockstep: simulated time has begun
                stepper.greet()
            except Exception as exc:  # noqa: BLE001 - a harness message this misread must not stop the agent
                self.executive.internal_error("harness input", exc)
        if self._booted:
            try:
                self.timers.run_due(lambda name, exc: self.executive.internal_error(f"timer {name}", exc))
            except Exception as exc:  # noqa: BLE001
                self.executive.internal_error("timers", exc)
            try:
                self.scheduler.service()  # time tags and the sequence, on time (no timer: next_due_s)
            except Exception as exc:  # noqa: BLE001
                self.executive.internal_error("scheduler", exc)
        if stepper is not None and stepper.pending_step and self.compute.hold_s() is None:
            self._answer_step()  # every harness step gets exactly one answer
        if self._booted:
            try:
                self.downlink.play()  # playback as the budget allows (it may complete a STORE_DUMP)
            except Exception as exc:  # noqa: BLE001
                self.executive.internal_error("downlink", exc)
        try:  # before the store's fsync: a durable completion report never outlives its journal record
            self.dispatcher.end_turn()  # the outcomes of this turn's commands made durable, after their reports went out
        except Exception as exc:  # noqa: BLE001
            self.executive.internal_error("command journal", exc)
        if self._booted:
            try:
                self.downlink.end_turn()  # the store's fsync policy
            except Exception as exc:  # noqa: BLE001
                self.executive.internal_error("downlink", exc)
            try:
                self.files.end_turn()  # CFDP PDUs as the budget and the line allow
            except Exception as exc:  # noqa: BLE001
                self.executive.internal_error("files", exc)
        self.link.flush()
        if self._watchdog_every_s is not None:
            self._feed_watchdog()

    def _next_due_s(self) -> float:
        """The next timer, or sooner when playback can send again or the schedule is due."""
        return min([self.timers.next_due_s(),
                    *(t for t in (self.downlink.next_due_s(), self.scheduler.next_due_s(), self.files.next_due_s())
                      if t is not None)])

    def _answer_step(self) -> None:
        """Under HIL, tell the harness the load it must feed back into its models."""
        admission = self.controller.state.admission
        computing = self.mode is Mode.COMPUTE and admission is not Admission.NONE
        self.board.stepper.answer(self.mode, admission, 1.0 if computing else 0.0)

    def _systemd_status(self) -> str:
        """The line ``systemctl status`` shows for the agent."""
        return f"boot {self.memory.boot_count}, mode {self.mode.value}, link {self.link.kind.value}"

    def _feed_watchdog(self) -> None:
        """``WATCHDOG=1`` to systemd if a feed is due (wall clock: systemd's timer is wall time)."""
        now_s = time.monotonic()
        if now_s - self._watchdog_fed_s >= self._watchdog_every_s:
            sdnotify.watchdog()
            self._watchdog_fed_s = now_s

    def start_problems(self) -> list[tuple[str, str]]:
        """(what, why) for each stored file found wrong at start (most unreadable, moved aside, defaults
        used; the telemetry SNs' also one it could not write): said at boot as STATE_CORRUPT, and by
        ``sunlit-flight run`` on its console. Each reason says what is in force instead."""
        store = self.params.store
        problems = [("parameters", f"{store.load_error}; {store.in_force()}")
                    ] if store.load_error else []
        if self.memory.file.load_error:  # it says what is in force: the copy before its last write, or defaults
            problems.append(("state", self.memory.file.load_error))
        if self.controller.cap_problem:
            problems.append(("power-mode cap", self.controller.cap_problem))
        problems += [(what, error) for what, error in (
            ("command journal", self.dispatcher.journal.load_error if self.dispatcher.journal else None),
            ("packet store", f"{len(self._store_unreadable)} segment file(s) unreadable "
                             f"({', '.join(self._store_unreadable)[:120]}): their records are not played back; "
                             "the files are left in place" if self._store_unreadable else None),
            ("telecommand replay window", self.replay.load_error if self.replay else None),
            ("telemetry SNs", self.tm_epoch.load_error if self.tm_epoch else None),
            ("telemetry SNs", self.tm_epoch.store_error if self.tm_epoch else None),
            ("schedule", self.scheduler.schedule.load_error),
            ("sequence run", self.scheduler.run_damage)) if error]
        problems += self.files.load_errors
        return problems + [("telecommand keys", problem) for problem in self._key_problems]

    def _boot(self) -> None:
        """Start of time for this run: report how the last one ended, go SAFE, start the timers."""
        self._booted = True
        # Contact is counted from the last one kept across the restart (its UTC); a clock that went back since
        # says nothing of the time between, which is then counted from this start, as with none kept.
        kept = self.memory.last_contact_utc_s
        self.link_service.restart_contact(0.0 if kept is None else self.clock.now_s() - kept)
        for name in ("housekeeping", "control"):
            self.timers.restart(name)
        self.params.booted()  # saved values this dictionary refused, each said
        self.executive.booted(previous_stop=self.memory.previous_stop, link=self.link.kind.value,
                              problems=self.start_problems(), removed=len(self._removed))
        early, self._early_events = self._early_events, []
        for name, args in early:  # after AGENT_STARTED, at the boot's time
            self._publish_event(name, args)
        self.executive.early_events_dropped(self._early_dropped, len(early))
        self._early_dropped = 0
        self.compute.time_began()
        self.downlink.time_began()
        self.scheduler.time_began()
        self.files.time_began()
        self.modes.booted(self.memory.previous_stop)  # SAFE; after an unclean stop, maybe back later on its own
        self.params.report()
        sdnotify.ready(self._systemd_status())

    def stop(self, reason: str, exit_status: int = EXIT_STAY_DOWN) -> int:
        """Ask the loop to end after this turn; safe from a signal handler or another thread.
        ``exit_status``: what the process should exit with (the service acts on it: SHUTDOWN).
        The first request says how the run ends (a SIGTERM arriving after SHUTDOWN then=RESTART_SAFE
        must not turn the restart into staying down); returns the exit status decided."""
        if self._stop_reason is None:
            self.exit_status = exit_status
            self._stop_reason = reason
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        return self.exit_status

    def start(self) -> None:
        """Start the worker and, unless the harness drives time, boot now."""
        self.compute.start()
        if not self.lockstep:
            self._boot()
        # Under lockstep the loop already answers the link, and boots on the harness's first step.

    def run(self) -> str:
        """Run until stopped; return why it stopped. A stop asked before (a signal as it was built) starts
        nothing: no worker started only to be stopped."""
        for sig, handler in self._catch_stop_signals((*STOP_SIGNALS, signal.SIGINT)).items():
            self._signals_before.setdefault(sig, handler)  # the first replaced is the one to put back
        if self._stop_reason is None:
            self.start()
        while self._stop_reason is None:
            self.step()
        return self.finish()

    def _catch_stop_signals(self, signals: tuple[signal.Signals, ...]) -> dict[int, Any]:
        """Make each of ``signals`` a :meth:`stop` (main thread only: Python's handlers live there); the
        handlers replaced, for :meth:`close`. A SIGHUP ignored (nohup) is left ignored."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        replaced: dict[int, Any] = {}
        for sig in signals:
            previous = signal.getsignal(sig)
            if sig == signal.SIGHUP and previous is signal.SIG_IGN:
                continue
            signal.signal(sig, lambda signum, frame: self.stop(signal.Signals(signum).name))
            replaced.setdefault(sig, previous)
        return replaced

    def _restore_signals(self) -> None:
        """The handlers in place before the agent's (a process that builds another agent, or none)."""
        if threading.current_thread() is not threading.main_thread():
            return
        before, self._signals_before = self._signals_before, {}
        for sig, handler in before.items():
            if handler is not None:  # None: one not set from Python, which cannot be put back from it
                signal.signal(sig, handler)

    def finish(self) -> str:
        """The clean end of a run: say so, save state marked clean."""
        reason = self._stop_reason or "stopped"
        sdnotify.stopping(reason)
        # The period's end-of-period reports for its last, partial period, before the last telemetry goes out
        # (found in audit: malformed packets past the first few and refused telecommands of that part were never
        # said, their counts not kept); drops of the stop's own packets are said after the restart (AGT-013).
        for where, report in (("link service", self.link_service.report_drops),
                              ("link service", self.link_service.report_auth),
                              ("link service", self.link_service.report_bad_packets),
                              ("downlink", self.downlink.report)):
            try:
                report()
            except Exception as exc:  # noqa: BLE001 - the stop goes on: the state is still to save
                self.executive.internal_error(where, exc)
        self.executive.stopping(reason)
        self._save_state(stopping=True)
        # said as each period does (found in audit: a full disk at a clean stop said nothing, and the next start's
        # AGENT_STARTED said previous_stop unclean)
        self.executive.state_writes(self.memory.write_failures, self.memory.write_error)
        try:
            self.dispatcher.end_turn()
        except Exception as exc:  # noqa: BLE001 - the store's sync and the last packets still go
            self.executive.internal_error("command journal", exc)
        self.downlink.end_turn()
        self.link.flush()
        self._finished = True
        return reason

    def close(self) -> None:
        """Release everything. The commands a stop cuts off (waiting for the worker, a dump under way) fail
        here, before the journal closes, and, after a clean stop, are kept in the counters it saved (found in
        audit: their records went to a journal reopened after its close, and cmd_failed after the restart
        missed them though the ground had their failure reports)."""
        self.files.flush()  # the files the ground confirmed since the last housekeeping
        self.compute.close()
        self.downlink.close()
        if self.dispatcher.journal is not None:
            try:
                self.dispatcher.journal.close()
            except OSError:
                pass  # closing goes on: the link, the board and the lock are still to close
        if self._finished and self._counters() != self.memory.counters:
            self._save_state(stopping=True)
        self.link.close()
        self.board.close()
        self._wake_r.close()
        self._wake_w.close()
        self._lock.release()
        self._restore_signals()
