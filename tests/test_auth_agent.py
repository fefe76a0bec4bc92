"""The agent with authenticated telecommands ([security] tc_keys): only the ground may command it."""

from __future__ import annotations

import pytest

from flight.link.definitions import DICTIONARY
from flight.link.messages import Codec
from flight.link.sdls import KeyRing, KeySlot, Sealer, SealingLink
from ground.client import GroundClient
from tests.inproc import InProcessAgent

KEY, OTHER = bytes(range(32)), bytes(range(5, 37))


def keyed_rig(tmp_path, **config) -> InProcessAgent:
    path = tmp_path / "tc.keys"
    path.write_text(KeyRing({1: KeySlot(1, KEY)}).dump())
    path.chmod(0o600)
    rig = InProcessAgent(tmp_path / "agent", tc_keys=path, **config)
    rig.client = GroundClient(SealingLink(rig.link.ground, Sealer(1, KEY)))
    rig.pump()
    return rig


@pytest.fixture
def rig(tmp_path):
    r = keyed_rig(tmp_path)
    yield r
    r.close()


def forged(name: str, args: dict, cmd_id: int) -> bytes:
    return Codec(DICTIONARY).encode_command(name, args, cmd_id)[0]


@pytest.mark.req("SEC-001")
def test_forged_commands_from_any_process_are_never_run(rig):
    before = rig.hk()
    assert before["tc_auth"] == "HMAC-SHA256"
    for i in range(200):
        rig.link.ground.send(forged("SET_PARAM", {"name": "hk_period_s", "value": "5"}, 1000 + i))
    rig.advance(2)
    values = rig.hk()
    assert values["tc_auth_rejected"] == 200 and values["cmd_accepted"] == before["cmd_accepted"]
    assert rig.agent.params["hk_period_s"] == 1.0
    assert rig.send("GET_PARAM", name="hk_period_s").completed  # the ground's own still go
    events = rig.events("TC_AUTH_REJECTED")
    assert sum(e.args["count"] for e in events) == 200 and len(events) <= 3  # one per housekeeping period


@pytest.mark.req("SEC-001")
def test_a_command_sealed_with_another_key_is_refused(rig):
    stranger = SealingLink(rig.link.ground, Sealer(1, OTHER))
    stranger.send(forged("SHUTDOWN", {"reason": "forged"}, 77))
    rig.advance(2)
    assert rig.agent._stop_reason is None
    assert rig.hk()["tc_auth_rejected"] == 1


@pytest.mark.req("SEC-002")
def test_a_captured_command_replayed_is_refused_even_after_a_restart(tmp_path):
    r = keyed_rig(tmp_path)
    captured: list[bytes] = []
    send = r.link.ground.send
    r.link.ground.send = lambda packet: captured.append(packet) or send(packet)
    assert r.send("SET_PARAM", name="hk_period_s", value="0.5").completed
    assert r.send("SAVE_PARAMS").completed
    r.link.ground.send = send
    for packet in captured:
        r.link.ground.send(packet)
    r.advance(2)
    assert r.hk()["tc_auth_rejected"] == len(captured)
    assert r.hk()["cmd_executed"] == 2
    r.close()
    again = keyed_rig(tmp_path)  # the same state directory: its replay reservation is on disk
    try:
        for packet in captured:
            again.link.ground.send(packet)
        again.advance(2)
        assert again.hk()["tc_auth_rejected"] == len(captured)
        assert [e.args["kind"] for e in again.events("TC_AUTH_REJECTED")] == ["replay"]
    finally:
        again.close()


@pytest.mark.req("SEC-004")
def test_forged_pings_are_not_contact(tmp_path):
    r = keyed_rig(tmp_path, parameters={"contact_timeout_s": 20.0})
    try:
        assert r.send("SET_MODE", mode="IDLE").completed
        ping = Codec(DICTIONARY).encode_command("PING", {"token": 1}, 5)[0]
        for _ in range(40):
            r.link.ground.send(ping)
            r.advance(1)
        assert r.events("CONTACT_LOST") and r.agent.mode.value == "SAFE"
        assert r.hk()["contact_age_s"] > 20
    finally:
        r.close()


@pytest.mark.system
@pytest.mark.req("SEC-001", "SEC-005")
def test_the_server_seals_for_its_operators_and_a_local_process_commands_nothing(ipc_url, start_agent, tmp_path):
    import dataclasses
    import subprocess
    import sys

    from ground.auth import UserStore
    from ground.server import GroundServer, quick_config
    from tests.test_ground_server import client_for, make_users

    keys = tmp_path / "tc.keys"
    keys.write_text(KeyRing({1: KeySlot(1, KEY)}).dump())
    keys.chmod(0o600)
    agent_config = tmp_path / "agent.toml"
    agent_config.write_text(f'[security]\ntc_keys = "{keys}"\n')
    start_agent(ipc_url, "--config", str(agent_config))
    users = make_users(tmp_path / "users.toml")
    config = quick_config(ipc_url, port=0, archive=None, users=users)
    config = dataclasses.replace(config, spacecraft=(dataclasses.replace(config.spacecraft[0], tc_keys=str(keys)),))
    server = GroundServer(config, UserStore.load(users), connect_timeout_s=20.0).start()
    try:
        operator = client_for(server, "alice")
        assert operator.send("NOOP", timeout_s=20).completed  # sealed by the server: the operator holds no key
        forger = GroundClient(ipc_url)  # any process on the board's network or socket
        try:
            forger.poll(1.0)  # connected
            for i in range(20):
                forger.link.send(forged("SHUTDOWN", {"reason": "forged"}, 500 + i))
            forger.poll(2.0)  # nothing comes back; the packets have left
        finally:
            forger.close()
        direct = subprocess.run([sys.executable, "-m", "ground.cli", "--direct", ipc_url, "--tc-keys", str(keys),
                                 "send", "NOOP"], capture_output=True, text=True, timeout=60)
        assert direct.returncode == 0, direct.stderr
        values = operator.wait_for(lambda i: getattr(i.record, "values", {}).get("tc_auth_rejected", 0) >= 20,
                                   20).record.values
        assert values["tc_auth"] == "HMAC-SHA256" and values["tc_auth_rejected"] == 20
        assert operator.send("NOOP", timeout_s=20).completed  # the agent still runs
    finally:
        server.stop()
