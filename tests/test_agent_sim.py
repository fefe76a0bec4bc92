"""The agent as a subprocess on the ``sim`` backend, stepped by a test harness, commanded over a real link."""

from __future__ import annotations

import time

import pytest

from flight.link.messages import EventRecord, Stage
from flight.link.dictionary import FailureCode
from flight.hal.sim_protocol import EpsValues
from flight.link.definitions import DICTIONARY
from hil.sim_env import SimEnvironment

T0 = 1_795_000_000.0  # simulated UTC start, 2026-11-18
SUNNY = {"soc_pct": 90.0, "bus_voltage_v": 8.2, "solar_power_w": 80.0}
# Bounds, never measures: an agent process starting on a loaded CI machine (8 test workers on 2 cores) took over 20 s,
# and its answer to a step or a command may take seconds there.
START_BOUND_S = 60.0
STEP_BOUND_S = 30.0
RESTORE_S = int(DICTIONARY.parameter_by_name["sensor_restore_s"].default)  # a sensor back this long is said restored


def _eps(values: dict) -> EpsValues:
    return EpsValues(**values)


class Rig:
    """A harness in miniature: steps simulated time one second at a time with a given environment."""

    def __init__(self, env: SimEnvironment, client):
        self.env = env
        self.client = client
        self.t = T0
        self.temp_c = 50.0
        self.eps = dict(SUNNY)
        self.state: dict = {}

    def run(self, seconds: int, temp_to_c: float | None = None, **eps) -> list[dict]:
        """Advance ``seconds``, ramping the board temperature linearly to ``temp_to_c``."""
        self.eps.update(eps)
        start = self.temp_c
        states = []
        for i in range(1, seconds + 1):
            if temp_to_c is not None:
                self.temp_c = start + (temp_to_c - start) * i / seconds
            self.t += 1.0
            self.state = self.env.step(self.t, STEP_BOUND_S, temps_c={"cpu-thermal": self.temp_c - 2,
                                                                      "tj-thermal": self.temp_c},
                                       eps=_eps(self.eps), board_power_w=10.0)
            states.append(self.state)
            self.client.poll(0)
        return states

    def hk(self) -> dict:
        """Housekeeping as of the latest simulated second (all three packets, time-stamped by the agent)."""
        self.run(1)
        deadline = time.monotonic() + STEP_BOUND_S
        wanted = ("mode", "admission", "throttle_state")
        while not all(self.client.latest.get(k, (None, 0.0))[1] >= self.t for k in wanted):
            assert time.monotonic() < deadline, "no fresh housekeeping"
            self.client.poll(0.1)
        return {k: v for k, (v, _t) in self.client.latest.items()}

    def events(self, name: str) -> list[EventRecord]:
        # The latest step's housekeeping goes out in the same turn as its events, which may come after the step's
        # answer: waited for first (a bound that fails nothing), so that a loaded machine's late turn is not read as
        # no event.
        deadline = time.monotonic() + STEP_BOUND_S
        while self.client.latest.get("mode", (None, 0.0))[1] < self.t and time.monotonic() < deadline:
            self.client.poll(0.1)
        self.client.poll(0.2)
        return [e for e in self.client.events if e.event.name == name]


@pytest.fixture
def rig(start_agent, make_client, short_dir, tmp_path):
    state_dir = tmp_path / "state"
    sim = f"ipc://{short_dir}/sim"
    url = f"zmq+ipc://{short_dir}/link"
    env = SimEnvironment(sim)
    args = ("--hal", "sim", "--sim-endpoint", sim, "--state-dir", str(state_dir), "--hk-period", "1",
            "--control-period", "1")
    agent = start_agent(url, *args)
    env.wait_for_agent(START_BOUND_S, alive=lambda: agent.running)
    client = make_client(url, wait_for_agent=False)
    client.connect()  # joined before time starts: nothing the agent publishes is missed
    r = Rig(env, client)
    r.run(2)
    assert client.dictionary_matches(timeout_s=STEP_BOUND_S) is True
    r.restart = lambda: start_agent(url, *args)
    r.agent = agent
    yield r
    env.close()


def send(rig: Rig, command: str, **args):
    return rig.client.send(command, args, timeout_s=STEP_BOUND_S)


@pytest.mark.req("AGT-001", "AGT-002", "AGT-050")
def test_modes_start_safe_and_refusals_carry_reasons(rig):
    assert rig.hk()["mode"] == "SAFE"
    started = rig.events("AGENT_STARTED")[0]
    assert started.args["previous_stop"] == "first start" and started.args["hal"] == "sim"
    r = send(rig, "SET_MODE", mode="COMPUTE")
    fail = r.failure
    assert fail.stage is Stage.STARTED and fail.code is FailureCode.NOT_ALLOWED_IN_MODE and "IDLE first" in fail.reason
    assert send(rig, "SET_MODE", mode="IDLE").completed
    assert send(rig, "SET_MODE", mode="COMPUTE").completed
    values = rig.hk()
    assert values["mode"] == "COMPUTE" and values["admission"] in ("INFERENCE", "ALL")
    assert rig.state.compute_duty == 1.0  # the harness is told the board is loaded
    changes = [(e.args["old"], e.args["new"]) for e in rig.events("MODE_CHANGED")]
    assert changes == [("BOOT", "SAFE"), ("SAFE", "IDLE"), ("IDLE", "COMPUTE")]
    assert send(rig, "SET_MODE", mode="SAFE").completed
    rig.run(2, soc_pct=25.0)  # below the 30 % floor: leaving SAFE is refused
    r = send(rig, "SET_MODE", mode="IDLE")
    assert r.failure and "below the floor" in r.failure.reason


@pytest.mark.req("AGT-003", "AGT-050")
def test_thermal_ramp_steps_down_up_and_hard_limit_stops_compute(rig):
    send(rig, "SET_PARAM", name="thermal_min_dwell_s", value="10")
    send(rig, "SET_PARAM", name="thermal_lookahead_s", value="0")
    send(rig, "SET_MODE", mode="IDLE")
    send(rig, "SET_MODE", mode="COMPUTE")
    top = rig.run(3)[-1].power_mode
    assert top == "MAXN_SUPER" or top.startswith("MAXN")
    rig.run(30, temp_to_c=87.0)  # over the 85 °C soft limit
    rig.run(5)
    downs = rig.events("THERMAL_STEP_DOWN")
    assert downs and rig.state.power_mode != top
    stepped_to = rig.state.power_mode
    assert rig.hk()["throttle_state"] == "THROTTLED"
    rig.run(60, temp_to_c=60.0)  # cool well below soft − hysteresis
    rig.run(40)
    assert rig.events("THERMAL_STEP_UP") and rig.state.power_mode == top != stepped_to
    rig.run(20, temp_to_c=97.0)  # past the 95 °C hard limit
    rig.run(2)
    assert rig.events("THERMAL_HARD_LIMIT")
    values = rig.hk()
    assert values["mode"] == "SAFE" and values["admission"] == "NONE" and values["throttle_state"] == "HARD_LIMIT"
    assert rig.state.compute_duty == 0.0


@pytest.mark.req("AGT-004")
def test_low_charge_forces_safe(rig):
    send(rig, "SET_MODE", mode="IDLE")
    send(rig, "SET_MODE", mode="COMPUTE")
    rig.run(3, soc_pct=18.0)
    assert rig.events("LOW_BATTERY") and rig.events("SAFE_ENTERED")
    values = rig.hk()
    assert values["mode"] == "SAFE" and values["battery_soc_pct"] == 18.0


@pytest.mark.req("AGT-001", "AGT-013")
def test_parameters_survive_a_restart_and_kill_9_comes_back_safe_with_counters(rig):
    assert send(rig, "SET_PARAM", name="battery_floor_pct", value="42.5").completed
    assert send(rig, "SAVE_PARAMS").completed
    send(rig, "SET_MODE", mode="IDLE")
    before = rig.hk()
    assert before["mode"] == "IDLE" and before["cmd_executed"] == 3
    rig.agent.kill()  # kill -9: no chance to save anything more
    agent = rig.restart()
    rig.env.wait_for_agent(START_BOUND_S, alive=lambda: agent.running)
    rig.client.connect()
    rig.run(2)
    after = rig.hk()
    assert after["mode"] == "SAFE" and after["boot_count"] == before["boot_count"] + 1
    assert after["cmd_executed"] == before["cmd_executed"] and after["cmd_accepted"] == before["cmd_accepted"]
    started = rig.events("AGENT_STARTED")[-1]
    assert started.args["previous_stop"] == "unclean"
    got = send(rig, "GET_PARAM", name="battery_floor_pct")
    assert got.result["value"] == 42.5 and got.result["saved"] == 42.5
    agent.stop()


@pytest.mark.req("AGT-022", "AGT-031")
def test_bad_sensor_values_do_not_disable_protection(rig):
    send(rig, "SET_MODE", mode="IDLE")
    send(rig, "SET_MODE", mode="COMPUTE")
    for _ in range(3):
        rig.t += 1.0
        rig.env.send_raw(rig.t, {"temps_c": {"gpu-thermal": float("nan"), "tj-thermal": 130.0, "cpu-thermal": "hot"},
                                 "eps": {"soc_pct": "full", "solar_power_w": None}, "board_power_w": float("inf")},
                         STEP_BOUND_S)
    values = rig.hk()
    assert values["mode"] == "SAFE" and values["internal_errors"] == 0
    assert rig.events("THERMAL_HARD_LIMIT")
    missing = [e.args["what"] for e in rig.events("SENSOR_MISSING")]
    assert any("gpu-thermal" in m for m in missing) and any("cpu-thermal" in m for m in missing)
    # A battery reading of NaN is a sensor gone, said and counted (it became None in silence, review).
    rig.run(2, soc_pct=float("nan"))
    assert rig.hk()["sensors_missing"] >= 1
    assert "eps soc_pct: not a reading in 0..100" in [e.args["what"] for e in rig.events("SENSOR_MISSING")]
    rig.run(3, soc_pct=90.0)
    assert "eps soc_pct: not a reading in 0..100" not in [e.args["what"] for e in rig.events("SENSOR_RESTORED")]
    rig.run(RESTORE_S, soc_pct=90.0)  # said back once it has read for sensor_restore_s (AGT-065)
    assert "eps soc_pct: not a reading in 0..100" in [e.args["what"] for e in rig.events("SENSOR_RESTORED")]


@pytest.mark.req("AGT-065")
def test_a_flapping_zone_gives_one_event_each_way(rig):
    """A zone that reads one step in two, its bad value different each time: one SENSOR_MISSING, and one
    SENSOR_RESTORED counting the dropouts once it has read for sensor_restore_s (before: both events
    every tick it flapped, each naming another value)."""
    for i in range(20):
        rig.t += 1.0
        temps = {"cpu-thermal": 48.0, "tj-thermal": 50.0, "gpu-thermal": 1e6 + i if i % 2 == 0 else 49.0}
        rig.env.step(rig.t, STEP_BOUND_S, temps_c=temps, eps=_eps(rig.eps), board_power_w=10.0)
        rig.client.poll(0)
    assert rig.hk()["sensors_missing"] == 0  # the last step read it
    missing = [e for e in rig.events("SENSOR_MISSING") if "gpu-thermal" in e.args["what"]]
    assert len(missing) == 1 and not [e for e in rig.events("SENSOR_RESTORED") if "gpu-thermal" in e.args["what"]]
    rig.run(RESTORE_S + 2)
    restored = [e for e in rig.events("SENSOR_RESTORED") if "gpu-thermal" in e.args["what"]]
    assert len(restored) == 1 and restored[0].args["what"] == missing[0].args["what"]
    assert 1 <= restored[0].args["dropouts"] <= 9
    assert len([e for e in rig.events("SENSOR_MISSING") if "gpu-thermal" in e.args["what"]]) == 1


@pytest.mark.req("AGT-064", "AGT-022")
def test_the_plan_takes_the_capacity_the_gauge_has_learnt_within_reason(rig):
    """A battery that faded to 80 Wh of its configured 100: the gauge's full-charge capacity is the one the
    plan and the load estimate use. One the configuration cannot have (500 Wh) is a sensor missing, said,
    and the last good one is held (a capacity moves over weeks: one bad reading is no cause to jump 20 %)."""
    assert rig.hk()["battery_capacity_wh"] == 100.0  # the configuration's: the gauge has not said
    rig.run(2, full_charge_wh=80.0)
    assert rig.hk()["battery_capacity_wh"] == 80.0
    rig.run(2, full_charge_wh=500.0)
    values = rig.hk()
    said = "eps full_charge_wh: not a reading in 30..120 (of the configured 100 Wh)"
    assert values["battery_capacity_wh"] == 80.0 and values["sensors_missing"] >= 1
    assert said in [e.args["what"] for e in rig.events("SENSOR_MISSING")]
    rig.run(3, full_charge_wh=79.0)
    assert rig.hk()["battery_capacity_wh"] == 79.0
    rig.run(RESTORE_S, full_charge_wh=79.0)
    assert said in [e.args["what"] for e in rig.events("SENSOR_RESTORED")]


@pytest.mark.req("HIL-002")
def test_a_step_is_taken_only_after_the_ground_packets_the_harness_sent_before_it(short_dir, monkeypatch):
    """The harness's ground packets (an acknowledgement, a command) and its steps come on two
    sockets, and nothing orders two sockets: a step says how many ground packets went before it,
    and the agent's end holds the step, its clock unmoved, until its link has taken them in, for
    LINK_HOLD_S at most. Each answer says how many the link had taken: the harness counts the
    next step's from there, so a packet lost or late holds one step at most."""
    import threading

    from flight.hal import sim
    from flight.link.definitions import Admission, Mode

    env = SimEnvironment(f"ipc://{short_dir}/hold")
    link = sim.HarnessLink(env.endpoint, True, "orin_nx_16gb", ("MAXN",))
    taken = [0]  # the agent's link: packets taken in
    link.attach_link(lambda: taken[0])
    loads: list = []

    def step(t_s: float, link_in: int) -> threading.Thread:
        thread = threading.Thread(target=lambda: loads.append(env.step(t_s, timeout_s=20, link_in=link_in)))
        thread.start()
        return thread

    def arrived() -> bool:
        """The agent's turns until the step is in, held or taken: whether simulated time moved."""
        for _ in range(2000):
            moved = link.receive()
            if link.pending_step or link.hold_s() is not None:
                return moved
            time.sleep(0.005)
        raise AssertionError("the step never came")

    monkeypatch.setattr(sim, "LINK_HOLD_S", 3600.0)  # a held step stays held while the test looks
    try:
        link.greet()
        env.wait_for_agent(timeout_s=STEP_BOUND_S)
        thread = step(100.0, link_in=1)
        assert not arrived()  # held: the harness's packet has not come in yet
        assert link.clock.now_s() == 0.0 and not link.pending_step and link.hold_s() is not None
        taken[0] = 1  # it comes in: the agent handles it at the old time, then takes the step
        assert link.receive() and link.clock.now_s() == 100.0 and link.pending_step and link.hold_s() is None
        link.answer(Mode.SAFE, Admission.NONE, 0.0)
        thread.join(timeout=20)
        assert [load.t_s for load in loads] == [100.0]

        monkeypatch.setattr(sim, "LINK_HOLD_S", 0.0)  # two packets counted that do not come
        thread = step(110.0, link_in=3)
        assert arrived() and link.clock.now_s() == 110.0 and link.link_holds_expired == 1
        link.answer(Mode.SAFE, Admission.NONE, 0.0)
        thread.join(timeout=20)
        monkeypatch.setattr(sim, "LINK_HOLD_S", 3600.0)
        # The answers say what the link had taken; the harness counts the next step's from there.
        assert [(load.link_taken, load.link_holds_expired) for load in loads] == [(1, 0), (1, 1)]
        thread = step(120.0, link_in=loads[-1].link_taken)  # nothing sent since: nothing waited for
        assert arrived() and link.clock.now_s() == 120.0 and link.link_holds_expired == 1
        link.answer(Mode.SAFE, Admission.NONE, 0.0)
        thread.join(timeout=20)
        taken[0] = 3  # the two came late after all
        thread = step(130.0, link_in=loads[-1].link_taken + 1)  # one more sent since the last answer
        assert arrived() and link.clock.now_s() == 130.0  # late ones count: 3 of 2 taken, nothing held
        link.answer(Mode.SAFE, Admission.NONE, 0.0)
        thread.join(timeout=20)
        thread = step(135.0, link_in=loads[-1].link_taken + 1)  # and one still on its way is waited for
        assert not arrived() and link.clock.now_s() == 130.0
        taken[0] = 4
        assert link.receive() and link.clock.now_s() == 135.0
        link.answer(Mode.SAFE, Admission.NONE, 0.0)
        thread.join(timeout=20)
        for t_s, link_in in ((140.0, 2**62), (150.0, -1)):  # a harness's bug: refused, named, not waited for
            thread = step(t_s, link_in=link_in)
            assert arrived() and link.clock.now_s() == t_s and "Env.link_in" in link.last_error
            assert any("Env.link_in" in problem for problem in link.env_problems)
            link.answer(Mode.SAFE, Admission.NONE, 0.0)
            thread.join(timeout=20)
        assert link.bad_messages == 2
        assert [load.t_s for load in loads] == [100.0, 110.0, 120.0, 130.0, 135.0, 140.0, 150.0]
        assert env.bad_messages == 0
    finally:
        link.close()
        env.close()


@pytest.mark.req("HIL-002")
def test_a_step_whose_time_is_not_a_time_is_refused_by_field_and_its_readings_kept(short_dir):
    """Found in an audit: a harness's first step at t_s -5.0 raised out of the agent's loop (the clock
    refuses to go back from 0.0). Such a time is refused, named and counted; the step is still answered and
    its readings taken; the next good step sets the clock."""
    import threading

    from flight.hal import sim
    from flight.link.definitions import Admission, Mode

    env = SimEnvironment(f"ipc://{short_dir}/t")
    link = sim.HarnessLink(env.endpoint, True, "orin_nx_16gb", ("MAXN",))
    try:
        link.greet()
        env.wait_for_agent(timeout_s=STEP_BOUND_S)
        # -5 s: before 1970; 1.795e12: milliseconds sent by mistake, past what a packet's time holds (found in
        # audit: every packet the agent made then raised, and it went silent)
        for t_s, clock_s in ((-5.0, 0.0), (100.0, 100.0), (1.795e12, 100.0)):
            loads: list = []
            thread = threading.Thread(target=lambda: loads.append(env.step(t_s, timeout_s=20, cpu_pct=12.0)))
            thread.start()
            for _ in range(2000):
                moved = link.receive()
                if link.pending_step:
                    break
                time.sleep(0.005)
            assert link.pending_step and moved is (t_s == 100.0) and link.clock.now_s() == clock_s
            assert link.env.cpu_pct == 12.0
            link.answer(Mode.SAFE, Admission.NONE, 0.0)
            thread.join(timeout=20)
            assert len(loads) == 1
        assert link.bad_messages == 2 and link.last_error.startswith("Env.t_s: 1795000000000.0 is not a time")
    finally:
        link.close()
        env.close()


@pytest.mark.req("HIL-002")
def test_a_step_held_until_its_hold_ends_is_answered_once_with_no_hello(short_dir, monkeypatch):
    """A hello tells the harness the agent restarted, and it sends its step again: said while a
    step is held, or as a long-held step is taken, it would have the step taken twice."""
    import threading

    from flight.hal import sim
    from flight.link.definitions import Admission, Mode

    env = SimEnvironment(f"ipc://{short_dir}/hello")
    link = sim.HarnessLink(env.endpoint, True, "orin_nx_16gb", ("MAXN",))
    link.attach_link(lambda: 0)  # the packet the step names never comes
    sent: list[int] = []
    send = env._send
    monkeypatch.setattr(env, "_send", lambda e: (sent.append(e.seq), send(e))[1])
    loads: list = []
    try:
        link.greet()
        env.wait_for_agent(timeout_s=STEP_BOUND_S)
        thread = threading.Thread(target=lambda: loads.append(env.step(100.0, timeout_s=20, link_in=1)))
        thread.start()
        for _ in range(2000):
            link.receive()
            if link.hold_s() is not None:
                break
            thread.join(timeout=0.01)
        assert link.hold_s() is not None, "the step never came"
        monkeypatch.setattr(sim, "HELLO_INTERVAL_S", 0.5)  # held now; shorter than the hold (LINK_HOLD_S, 1 s)
        answers = 0
        while thread.is_alive() or link.pending_step:  # the agent's turns: take in, greet, answer
            link.receive()
            link.greet()
            if link.pending_step:
                link.answer(Mode.SAFE, Admission.NONE, 0.0)
                answers += 1
            thread.join(timeout=0.01)
        assert link.link_holds_expired == 1 and answers == 1 and sent == [1] and [x.t_s for x in loads] == [100.0]
    finally:
        link.close()
        env.close()


@pytest.mark.req("AGT-031")
def test_a_bad_board_power_cpu_or_memory_value_from_the_harness_is_named_not_dropped_unsaid():
    """Found in audit: NaN, 150 % and -3 % became None with nothing in missing, and a board power of -40 W was
    taken; each is said by name now, as a zone's is."""
    import math

    from flight.hal import sim_protocol as sp
    from flight.hal.base import PowerMode
    from flight.hal.sim import HarnessLink, SimHal

    link = HarnessLink("tcp://127.0.0.1:1", True, "orin_nx_16gb", ("10W",))
    hal = SimHal(link, (PowerMode("10W", 0, 10.0, "profile"),))
    for fields, expected in (({"board_power_w": math.nan, "cpu_pct": 150.0, "mem_pct": -3.0},
                              ["board_power_w: no valid value (nan", "cpu_pct: no valid value (150.0",
                               "mem_pct: no valid value (-3.0"]),
                             ({"board_power_w": -40.0}, ["board_power_w: no valid value (-40.0"])):
        msg, problems = sp.CODEC.decode_lenient(sp.encode(sp.Env(1, 100.0, {"tj-thermal": 50.0}, {}, **fields)))
        link._take(msg, tuple(problems))  # noqa: SLF001 - as the link's receive does
        reading = hal.read()
        assert reading.board_power_w is None
        assert [m.split(";")[0] for m in reading.missing] == expected
    link.close()
