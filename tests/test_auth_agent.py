"""The agent with authenticated telecommands ([security] tc_keys): only the ground may command it."""

from __future__ import annotations

import pytest

from flight.link.definitions import DICTIONARY
from flight.link.messages import Codec
from flight.link.sdls import RESERVE_US, KeyRing, KeySlot, Sealer, SealingLink
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


def sent_sealed(rig: InProcessAgent, *commands: tuple[str, dict]) -> list[bytes]:
    """Send ``commands`` (each must complete) and return the sealed packets as they went on the link."""
    captured: list[bytes] = []
    send = rig.link.ground.send
    rig.link.ground.send = lambda packet: captured.append(packet) or send(packet)
    try:
        for name, args in commands:
            assert rig.send(name, **args).completed
    finally:
        rig.link.ground.send = send
    return captured


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


@pytest.mark.req("SEC-001", "LNK-007")
def test_a_sealed_command_damaged_on_the_line_is_a_malformed_packet_not_an_attack(rig):
    """Found in audit: a bit flipped on a noisy line failed the CRC and raised "forged or replayed" alarms."""
    (packet,) = sent_sealed(rig, ("NOOP", {}))
    before = rig.hk()
    damaged = bytearray(packet)
    damaged[len(damaged) // 2] ^= 0x10  # the CRC fails
    rig.link.ground.send(bytes(damaged))
    rig.link.ground.send(packet[:-1])  # cut short: its length field is wrong
    rig.advance(2)
    values = rig.hk()
    assert values["tc_bad_packets"] == before["tc_bad_packets"] + 2
    assert values["tc_auth_rejected"] == before["tc_auth_rejected"] == 0
    reasons = [e.args["reason"] for e in rig.events("BAD_PACKET")]
    assert any("CRC" in r for r in reasons) and any("length" in r for r in reasons)
    assert not rig.events("TC_AUTH_REJECTED") and values["cmd_executed"] == before["cmd_executed"]


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
    captured = sent_sealed(r, ("SET_PARAM", {"name": "hk_period_s", "value": "0.5"}), ("SAVE_PARAMS", {}))
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


@pytest.mark.req("SEC-002")
def test_a_replay_window_lost_with_the_state_directory_still_refuses_a_captured_command(tmp_path):
    r = keyed_rig(tmp_path)
    captured = sent_sealed(r, ("SET_PARAM", {"name": "hk_period_s", "value": "0.5"}))
    r.close()
    (tmp_path / "agent" / "tc_replay.json").unlink()  # restored from an old copy, or lost: keys still in force
    state = (tmp_path / "agent" / "state.json").read_bytes()
    for also in (None, "state.json damaged"):  # then the state cannot say a window was written: taken as lost too
        if also:
            (tmp_path / "agent" / "tc_replay.json").unlink()
            (tmp_path / "agent" / "state.json").write_bytes(state[:-9])
        again = InProcessAgent(tmp_path / "agent", tc_keys=tmp_path / "tc.keys")
        try:
            said = [e.args for e in again.events("STATE_CORRUPT") if e.args["what"] == "telecommand replay window"]
            assert said and "missing" in said[0]["reason"], also  # said at boot
            for packet in captured:
                again.link.ground.send(packet)
            again.advance(2)
            assert again.hk()["tc_auth_rejected"] == len(captured)
            assert again.agent.params["hk_period_s"] == 1.0  # the replayed SET_PARAM did not run
            assert [e.args["kind"] for e in again.events("TC_AUTH_REJECTED")] == ["replay"]
        finally:
            again.close()


@pytest.mark.req("SEC-002")
def test_a_restart_before_any_command_is_not_taken_for_a_lost_replay_window(tmp_path):
    keyed_rig(tmp_path).close()  # the first start with keys: no command taken before the restart
    again = InProcessAgent(tmp_path / "agent", tc_keys=tmp_path / "tc.keys")
    try:
        assert not [e for e in again.events("STATE_CORRUPT") if e.args["what"] == "telecommand replay window"]
        again.client = GroundClient(SealingLink(again.link.ground, Sealer(1, KEY)))
        assert again.send("NOOP").completed  # the ground's clock, now: taken at once
    finally:
        again.close()


@pytest.mark.req("SEC-002")
def test_a_replay_window_the_agent_cannot_write_is_reported_and_commands_still_run(rig):
    path = rig.agent.state_dir / "tc_replay.json"
    path.unlink(missing_ok=True)
    path.mkdir()  # the next reservation cannot be written over it
    far = Sealer(1, KEY, lambda: 2 ** 62)  # past any reservation: the agent must write a new one
    rig.client = GroundClient(SealingLink(rig.link.ground, far))
    assert rig.send("SET_PARAM", name="hk_period_s", value="2").completed
    rig.hk()
    said = rig.events("TC_REPLAY_NOT_KEPT")
    assert len(said) == 1 and said[0].args["count"] == 1 and "tc_replay.json" in said[0].args["reason"]
    rig.hk()
    assert len(rig.events("TC_REPLAY_NOT_KEPT")) == 1  # said once, not every period


@pytest.mark.req("SEC-012")
def test_a_stop_asked_after_a_commanded_restart_does_not_turn_it_into_staying_down(rig):
    assert rig.send("SHUTDOWN", reason="restart", then="RESTART_SAFE").completed
    status = rig.agent.exit_status
    assert rig.agent.stop("SIGTERM") == status == 75  # the service manager's stop while the agent ends its run
    assert rig.agent.exit_status == 75 and rig.agent._stop_reason != "SIGTERM"
    # A second SHUTDOWN that would end it otherwise is refused, saying how the run will end.
    other = rig.send("SHUTDOWN", reason="stay", then="STAY_DOWN")
    assert not other.completed and "already under way and exits with status 75" in other.outcome
    assert rig.agent.exit_status == 75


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
    keys.write_text(KeyRing({1: KeySlot(1, KEY), 7: KeySlot(7, bytes(range(120, 152)), "telemetry")}).dump())
    keys.chmod(0o600)
    agent_config = tmp_path / "agent.toml"
    agent_config.write_text(f'[security]\ntc_keys = "{keys}"\ntm_auth = true\n')
    agent = start_agent(ipc_url, "--config", str(agent_config))
    users = make_users(tmp_path / "users.toml")
    config = quick_config(ipc_url, port=0, archive=tmp_path / "var" / "ground.sqlite", users=users)
    config = dataclasses.replace(config, spacecraft=(dataclasses.replace(config.spacecraft[0], tc_keys=str(keys),
                                                                         tm_auth=True),))
    server = GroundServer(config, UserStore.load(users), connect_timeout_s=20.0).start()
    try:
        operator = client_for(server, "alice")
        assert operator.send("NOOP", timeout_s=20).completed  # sealed by the server: the operator holds no key
        # The SNs it used, in its own state beside the archive (the key file's folder may be read-only).
        assert (tmp_path / "var" / f"{config.spacecraft[0].id}.tc_sn").exists()
        assert not (tmp_path / "tc.keys.sn").exists()
        forger = GroundClient(ipc_url)  # any process on the board's network or socket
        try:
            forger.poll(1.0)  # connected
            for i in range(20):
                forger.link.send(forged("SHUTDOWN", {"reason": "forged"}, 500 + i))
            # Nothing comes back; wait until the agent has them all before the forger's socket
            # closes (it closes at once, dropping what it has not sent yet).
            values = operator.wait_for(lambda i: getattr(i.record, "values", {}).get("tc_auth_rejected", 0) >= 20,
                                       60).record.values  # a bound, not a measure: a loaded machine is slow
        finally:
            forger.close()
        direct = subprocess.run([sys.executable, "-m", "ground.cli", "--direct", ipc_url, "--tc-keys", str(keys),
                                 "--tm-auth", "send", "NOOP"], capture_output=True, text=True, timeout=60)
        assert direct.returncode == 0, direct.stderr
        assert values["tc_auth"] == "HMAC-SHA256" and values["tc_auth_rejected"] == 20
        assert operator.send("NOOP", timeout_s=20).completed  # the agent still runs
        assert "telecommands authenticated (HMAC-SHA256" in agent.log() and "NOT authenticated" not in agent.log()
        assert server.status()["spacecraft"][config.spacecraft[0].id]["tm_sn_error"] is None
    finally:
        server.stop()
    # The highest telemetry SNs it took, in its own state too: a restarted server refuses what was captured before.
    from flight.link.sdls import TmFloor

    assert TmFloor(tmp_path / "var" / f"{config.spacecraft[0].id}.tm_sn").highest[7] > 0


@pytest.mark.req("SEC-001")
def test_an_agent_without_keys_says_at_start_that_anyone_can_command_it(ipc_url, start_agent, make_client):
    agent = start_agent(ipc_url)
    make_client(ipc_url)  # it is up
    assert "warning: telecommands are NOT authenticated (no [security] tc_keys)" in agent.log()


MASTER = bytes(range(64, 96))


def rotation_rig(tmp_path) -> tuple[InProcessAgent, object]:
    """A board and a ground holding the same slots (SPI 1 active, SPI 100 master); the ground's
    client seals from its key file, following it when it changes."""
    board_keys, ground_keys = tmp_path / "board.keys", tmp_path / "ground.keys"
    for path in (board_keys, ground_keys):
        KeyRing({1: KeySlot(1, KEY), 100: KeySlot(100, MASTER, "master")}).save(path)
    rig = InProcessAgent(tmp_path / "agent", tc_keys=board_keys)
    rig.client = GroundClient(SealingLink.from_key_file(rig.link.ground, ground_keys))
    rig.pump()
    return rig, ground_keys


def key_cli(*argv: str, capsys) -> tuple[int, str, str]:
    from ground.cli import main

    code = main(["key", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.req("SEC-002", "SEC-011")
def test_after_the_grounds_clock_stepped_back_with_its_sn_file_lost_sn_floor_gets_commands_through(tmp_path, capsys):
    """Every command is refused as stale then, a KEY_LOAD too, so no rotation helps: the custodian
    raises the reservation above the agent's highest SN (the number its refusal gives) and the
    restarted ground seals above it, its clock still behind."""
    import re
    import time

    from ground.client import CommandOutcomeUnknown

    rig, ground_keys = rotation_rig(tmp_path)
    sn_file = tmp_path / "ground.keys.sn"
    try:
        assert rig.send("NOOP").completed
        sn_file.unlink()  # lost
        behind = time.time_ns() // 1000 - 3600 * 1_000_000  # and the ground's clock an hour back
        rig.client = GroundClient(SealingLink.from_key_file(rig.link.ground, ground_keys, clock_us=lambda: behind))
        with pytest.raises(CommandOutcomeUnknown):
            rig.send("NOOP")
        assert rig.hk()["tc_auth_rejected"] == 1  # and said at the next housekeeping period
        reason = rig.events("TC_AUTH_REJECTED")[-1].args["reason"]
        above = re.search(r"older than the window \((\d+)\)", reason).group(1)
        assert key_cli("sn-floor", "--sn-file", str(sn_file), "--at", "2026-12-04T18:00", capsys=capsys)[0] == 2
        code, _, err = key_cli("sn-floor", "--sn-file", str(sn_file), "--above", str(2**64 - 1), capsys=capsys)
        assert code == 2 and "largest SN" in err  # a typing error would leave the ground unable to seal
        code, _, err = key_cli("sn-floor", "--sn-file", str(sn_file), "--at", "2126-12-04T18:00Z", capsys=capsys)
        assert code == 2 and "days ahead" in err and "--force" in err
        code, out, _ = key_cli("sn-floor", "--sn-file", str(sn_file), "--above", above, capsys=capsys)
        assert code == 0 and "restart the server" in out
        rig.client = GroundClient(SealingLink.from_key_file(rig.link.ground, ground_keys, clock_us=lambda: behind))
        assert rig.send("NOOP").completed  # restarted: sealed above the agent's highest, its clock still behind
        code, out, _ = key_cli("sn-floor", "--sn-file", str(sn_file), "--above", "5", capsys=capsys)
        assert code == 0 and "nothing written" in out  # never lowered
    finally:
        rig.close()


@pytest.mark.req("SEC-011")
def test_a_key_rotation_by_command_holds_across_a_restart(tmp_path, capsys):
    rig, ground_keys = rotation_rig(tmp_path)
    try:
        code, out, _ = key_cli("new", "--keys", str(ground_keys), "--spi", "2", capsys=capsys)
        assert code == 0 and KeyRing.load(ground_keys).slots[2].state == "pending"
        line = next(ln for ln in out.splitlines() if ln.startswith("KEY_LOAD "))
        args = dict(part.split("=", 1) for part in line.split()[1:])
        assert args["master"] == "100" and len(args["wrapped"]) == 80
        assert KeyRing.load(ground_keys).slots[2].key.hex() not in out  # the key itself is never shown
        result = rig.send("KEY_LOAD", spi=2, master=100, wrapped=args["wrapped"])
        assert result.completed, result.outcome
        fingerprint = KeyRing.load(ground_keys).slots[2].fingerprint()
        assert rig.events("KEY_LOADED")[-1].args == {"spi": 2, "fingerprint": fingerprint}
        assert rig.client.link.sealer.spi == 1  # pending on the ground: not used yet
        refused = rig.send("KEY_REVOKE", spi=1)  # sealed by slot 1 itself: it would lock the ground out
        assert not refused.completed and "spi: slot 1 sealed this command" in refused.outcome
        assert rig.agent.keys._ring.slots[1].active and not rig.events("KEY_REVOKED")
        assert key_cli("activate", "--keys", str(ground_keys), "--spi", "2", capsys=capsys)[0] == 0
        assert rig.send("KEY_REVOKE", spi=1).completed  # sealed with slot 2: the file was read again
        assert rig.client.link.sealer.spi == 2
        assert rig.events("KEY_REVOKED")[-1].args == {"spi": 1}
        slots = rig.send("KEY_LIST").result["slots"]
        assert {s["spi"]: s["state"] for s in slots} == {1: "revoked", 2: "active", 100: "master"}
        assert all(len(s["fingerprint"]) == 8 for s in slots)
        SealingLink(rig.link.ground, Sealer(1, KEY)).send(forged("NOOP", {}, 900))
        assert rig.hk()["tc_auth_rejected"] == 1 and rig.hk()["tc_keys_active"] == 1
        # Refusals name the field and change nothing.
        assert "last active" in rig.send("KEY_REVOKE", spi=2).outcome
        assert "master key" in rig.send("KEY_REVOKE", spi=100).outcome
        assert "taken" in rig.send("KEY_LOAD", spi=1, master=100, wrapped=args["wrapped"]).outcome
        assert "not a master" in rig.send("KEY_LOAD", spi=3, master=2, wrapped=args["wrapped"]).outcome
        assert "wrapped:" in rig.send("KEY_LOAD", spi=3, master=100, wrapped="00" * 40).outcome
        assert "wrapped:" in rig.send("KEY_LOAD", spi=3, master=100, wrapped="zz").outcome
        assert "never loaded twice" in rig.send("KEY_LOAD", spi=3, master=100, wrapped=args["wrapped"]).outcome
        assert rig.send("KEY_REVOKE", spi=1).result["already"] is True  # revoked: left as it is
        assert 3 not in rig.agent.keys._ring.slots
    finally:
        rig.close()
    again = InProcessAgent(tmp_path / "agent", tc_keys=tmp_path / "board.keys")  # the same state directory
    try:
        sealing = SealingLink.from_key_file(again.link.ground, ground_keys)
        later_us = sealing.sealer.next_sn() + 10_000_000  # past the replay reservation a restart leaves (5 s)
        sealing.sealer.last_sn = later_us
        again.client = GroundClient(sealing)
        assert again.send("NOOP").completed  # slot 2, loaded by command, is still in force
        SealingLink(again.link.ground, Sealer(1, KEY, lambda: later_us + 1000)).send(forged("NOOP", {}, 901))
        assert again.hk()["tc_auth_rejected"] == 1  # and slot 1 still revoked
        assert [e.args["kind"] for e in again.events("TC_AUTH_REJECTED")] == ["revoked"]
    finally:
        again.close()


@pytest.mark.req("SEC-011")
def test_the_masters_move_to_the_custodians_file_and_a_rotation_takes_them_from_there(tmp_path, capsys):
    """The server needs active slots only: ``key split`` moves the provisioned file's master out
    of its reach (a leaked server file can then load no key on board), the server stops saying
    its file holds one, and a rotation wraps the new key under the custodian's master."""
    rig, ground_keys = rotation_rig(tmp_path)
    masters = tmp_path / "custodian" / "masters.keys"
    masters.parent.mkdir(mode=0o700)
    try:
        assert "key split" in rig.client.link.key_warning  # said in the server's status
        code, out, _ = key_cli("split", "--keys", str(ground_keys), "--master-keys", str(masters), capsys=capsys)
        assert code == 0 and MASTER.hex() not in out and KeySlot(100, MASTER).fingerprint() in out
        assert KeyRing.load(ground_keys).masters() == [] and sorted(KeyRing.load(ground_keys).slots) == [1]
        assert KeyRing.load(masters, need_active=False).slots[100].key == MASTER
        assert oct(masters.stat().st_mode & 0o777) == "0o600"
        assert rig.send("NOOP").completed and rig.client.link.key_warning is None  # the file, read again
        code, _, err = key_cli("new", "--keys", str(ground_keys), "--spi", "2", capsys=capsys)
        assert code == 2 and "no master key" in err  # not in the server's file any more
        code, _, err = key_cli("new", "--keys", str(ground_keys), "--master-keys", str(masters), "--spi", "100",
                               capsys=capsys)
        assert code == 2 and "never reused" in err  # the master's slot number is taken
        code, out, err = key_cli("new", "--keys", str(ground_keys), "--master-keys", str(masters), "--spi", "2",
                                 capsys=capsys)
        assert code == 0 and "key split" not in err
        line = next(ln for ln in out.splitlines() if ln.startswith("KEY_LOAD "))
        args = dict(part.split("=", 1) for part in line.split()[1:])
        assert rig.send("KEY_LOAD", spi=2, master=100, wrapped=args["wrapped"]).completed
        assert key_cli("activate", "--keys", str(ground_keys), "--spi", "2", capsys=capsys)[0] == 0
        assert rig.send("NOOP").completed and rig.client.link.sealer.spi == 2
        code, _, err = key_cli("split", "--keys", str(ground_keys), "--master-keys", str(masters), capsys=capsys)
        assert code == 2 and "no master slot" in err
    finally:
        rig.close()


@pytest.mark.req("SEC-011")
def test_a_split_that_fails_midway_leaves_the_masters_in_both_files_never_in_neither(tmp_path, capsys, monkeypatch):
    ground_keys, masters = tmp_path / "ground.keys", tmp_path / "masters.keys"
    KeyRing({1: KeySlot(1, KEY), 100: KeySlot(100, MASTER, "master")}).save(ground_keys)
    code, _, err = key_cli("split", "--keys", str(ground_keys), "--master-keys", str(ground_keys), capsys=capsys)
    assert code == 2 and "same file" in err and KeyRing.load(ground_keys).masters() == [100]
    code, _, err = key_cli("split", "--keys", str(ground_keys), "--master-keys", str(tmp_path / "no" / "m.keys"),
                           capsys=capsys)
    assert code == 2 and "--master-keys" in err and "no such directory" in err
    save = KeyRing.save

    def server_file_refused(ring, path):  # the custodian's file is written; the server's is not
        if str(path) == str(ground_keys):
            raise PermissionError(13, "Permission denied")
        save(ring, path)

    monkeypatch.setattr(KeyRing, "save", server_file_refused)
    code, _, err = key_cli("split", "--keys", str(ground_keys), "--master-keys", str(masters), capsys=capsys)
    assert code == 2 and "in both files" in err and "run key split again" in err and "Traceback" not in err
    assert KeyRing.load(ground_keys).masters() == [100] and KeyRing.load(masters, need_active=False).masters() == [100]
    monkeypatch.setattr(KeyRing, "save", save)
    assert key_cli("split", "--keys", str(ground_keys), "--master-keys", str(masters), capsys=capsys)[0] == 0
    assert KeyRing.load(ground_keys).masters() == [] and KeyRing.load(masters, need_active=False).masters() == [100]


@pytest.mark.req("SEC-011")
def test_a_custodians_file_that_cannot_be_read_back_keeps_the_masters_in_the_servers(tmp_path, capsys, monkeypatch):
    """A medium that keeps no Unix modes (a FAT stick) shows every file readable by all, and a key
    file so shown is refused: found on reading it back, before anything leaves the server's file."""
    ground_keys, masters = tmp_path / "ground.keys", tmp_path / "masters.keys"
    KeyRing({1: KeySlot(1, KEY), 100: KeySlot(100, MASTER, "master")}).save(ground_keys)
    save = KeyRing.save

    def as_on_fat(ring, path):
        save(ring, path)
        if str(path) == str(masters):
            masters.chmod(0o644)

    monkeypatch.setattr(KeyRing, "save", as_on_fat)
    code, _, err = key_cli("split", "--keys", str(ground_keys), "--master-keys", str(masters), capsys=capsys)
    assert code == 2 and "cannot be read back" in err and "keeps file modes" in err
    assert KeyRing.load(ground_keys).masters() == [100]


@pytest.mark.req("SEC-011")
def test_the_key_files_comments_outlive_a_split_and_a_rotation(tmp_path, capsys):
    """install.sh's header and an operator's notes stay where they were; the master's own note
    goes with it to the custodian's file, which says what it is; key new notes the slot it made."""
    ground_keys, masters = tmp_path / "ground.keys", tmp_path / "masters.keys"
    ground_keys.write_text(
        "# Sunlit telecommand keys, made by deploy/install.sh\n# SPI KEY [state]\n"
        f"1 {KEY.hex()}  # the launch key\n"
        "# the master: kept in the safe as well\n"
        f"100 {MASTER.hex()} master  # never seals\n"
        "# end of file\n")
    ground_keys.chmod(0o600)
    assert key_cli("split", "--keys", str(ground_keys), "--master-keys", str(masters), capsys=capsys)[0] == 0
    assert ground_keys.read_text() == ("# Sunlit telecommand keys, made by deploy/install.sh\n# SPI KEY [state]\n"
                                       f"1 {KEY.hex()}  # the launch key\n# end of file\n")
    custodian = masters.read_text().splitlines()
    assert custodian[0].startswith("# Sunlit master keys") and str(ground_keys) in custodian[1]
    assert custodian[-2:] == ["# the master: kept in the safe as well", f"100 {MASTER.hex()} master  # never seals"]
    assert KeyRing.load(masters, need_active=False).slots[100].key == MASTER

    code, _, _ = key_cli("new", "--keys", str(ground_keys), "--master-keys", str(masters), "--spi", "2",
                         capsys=capsys)
    assert code == 0 and key_cli("activate", "--keys", str(ground_keys), "--spi", "2", capsys=capsys)[0] == 0
    assert key_cli("revoke", "--keys", str(ground_keys), "--spi", "1", capsys=capsys)[0] == 0
    code, _, err = key_cli("activate", "--keys", str(ground_keys), "--spi", "1", capsys=capsys)
    assert code != 0 and "slot is revoked; only a pending slot can be made active" in err, err
    code, _, err = key_cli("revoke", "--keys", str(ground_keys), "--spi", "1", capsys=capsys)
    assert code != 0 and "only an active or pending slot can be made revoked" in err, err  # found in audit: "a active"
    lines = ground_keys.read_text().splitlines()
    assert lines[:3] == ["# Sunlit telecommand keys, made by deploy/install.sh", "# SPI KEY [state]",
                         f"1 {KEY.hex()} revoked  # the launch key"]
    assert lines[3].startswith("# slot 2: made by sunlit-ground key new on ") and "master 100" in lines[3]
    assert lines[4].startswith("2 ") and lines[4].split()[2:] == [] and lines[5:] == ["# end of file"]
    assert sorted(KeyRing.load(ground_keys).slots) == [1, 2] and KeyRing.load(ground_keys).active() == [2]


def test_a_file_name_with_a_newline_cannot_break_the_custodians_header(tmp_path, capsys):
    odd = tmp_path / "ground\n100 keys"
    KeyRing({1: KeySlot(1, KEY), 100: KeySlot(100, MASTER, "master")}).save(odd)
    masters = tmp_path / "masters.keys"
    assert key_cli("split", "--keys", str(odd), "--master-keys", str(masters), capsys=capsys)[0] == 0
    assert KeyRing.load(masters, need_active=False).masters() == [100]  # every header line still a comment


@pytest.mark.req("SEC-011")
def test_a_split_onto_another_key_in_the_slot_moves_nothing(tmp_path, capsys):
    ground_keys, masters = tmp_path / "ground.keys", tmp_path / "masters.keys"
    KeyRing({1: KeySlot(1, KEY), 100: KeySlot(100, MASTER, "master")}).save(ground_keys)
    KeyRing({100: KeySlot(100, OTHER, "master")}).save(masters)
    code, _, err = key_cli("split", "--keys", str(ground_keys), "--master-keys", str(masters), capsys=capsys)
    assert code == 2 and "slot 100 there is another key" in err and "Traceback" not in err
    assert KeyRing.load(ground_keys).masters() == [100]
    assert KeyRing.load(masters, need_active=False).slots[100].key == OTHER


@pytest.mark.req("SEC-011")
def test_a_time_tagged_key_revoke_is_refused_when_tagged_not_at_release(tmp_path):
    """Released from the schedule, no slot would have sealed it: it could be the ground's own key, so it can never
    run from a time tag. Found in audit: the tag was taken, to fail at release out of contact; now refused at
    once, naming the command, and the key stays active."""
    import json

    from flight.agent.schedule import CommandRefused, check_command
    from flight.link.definitions import DICTIONARY
    from flight.link.sdls import wrap_key

    with pytest.raises(CommandRefused, match="KEY_REVOKE runs only as the ground sends it"):
        check_command(DICTIONARY, "KEY_REVOKE", {"spi": 1})  # a sequence step's check, and the ground's
    rig, _ground_keys = rotation_rig(tmp_path)
    try:
        assert rig.send("KEY_LOAD", spi=2, master=100, wrapped=wrap_key(MASTER, bytes(range(7, 39))).hex()).completed
        tagged = rig.send("SCHEDULE_AFTER", delay_s=2.0, command="KEY_REVOKE", args=json.dumps({"spi": 1}))
        assert not tagged.completed and "KEY_REVOKE runs only as the ground sends it" in tagged.outcome
        rig.advance(4)
        assert rig.agent.keys._ring.slots[1].active and not rig.events("KEY_REVOKED")
    finally:
        rig.close()


@pytest.mark.req("SEC-011")
def test_a_damaged_key_state_keeps_its_revocations_and_losing_both_copies_is_said(tmp_path):
    from flight.link.sdls import wrap_key

    rig, _ground_keys = rotation_rig(tmp_path)
    new_key = bytes(range(7, 39))
    try:
        assert rig.send("KEY_LOAD", spi=2, master=100, wrapped=wrap_key(MASTER, new_key).hex()).completed
        rig.client = GroundClient(SealingLink(rig.link.ground, Sealer(2, new_key)))  # the ground moves to slot 2
        assert rig.send("KEY_REVOKE", spi=1).completed
    finally:
        rig.close()
    state = tmp_path / "agent" / "tc_keys_state"
    state.write_text("{not json")  # one copy damaged: the other holds the revocation
    again = InProcessAgent(tmp_path / "agent", tc_keys=tmp_path / "board.keys")
    try:
        corrupt = [e.args for e in again.events("STATE_CORRUPT")]  # said at boot
        assert any(e["what"] == "telecommand keys" and "other copy is in force" in e["reason"] for e in corrupt)
        assert {s.spi: s.state for s in again.agent.keys._ring.slots.values()} == {1: "revoked", 2: "active",
                                                                                 100: "master"}
    finally:
        again.close()
    for copy in (state, state.with_name("tc_keys_state.bak")):
        copy.write_text("{not json")
    lost = InProcessAgent(tmp_path / "agent", tc_keys=tmp_path / "board.keys")
    try:
        corrupt = [e.args for e in lost.events("STATE_CORRUPT")]
        assert any("only the provisioned keys" in e["reason"] for e in corrupt)
        lost.client = GroundClient(SealingLink(lost.link.ground, Sealer(1, KEY, lambda: 2 ** 62)))
        listing = lost.send("KEY_LIST").result
        assert "only the provisioned keys" in listing["state_error"] and "tc_keys_state.bak" in listing["state_error"]
        # The files are named, never where the board keeps them (SEC-006).
        assert str(tmp_path) not in listing["state_error"] and all(str(tmp_path) not in e["reason"] for e in corrupt)
    finally:
        lost.close()


@pytest.mark.req("SEC-011")
def test_key_commands_fail_saying_so_when_authentication_is_off(tmp_path):
    rig = InProcessAgent(tmp_path / "agent")
    try:
        result = rig.send("KEY_LIST")
        assert not result.completed and "OFF" in result.outcome
        assert rig.hk()["tc_keys_active"] == 0
    finally:
        rig.close()


@pytest.mark.req("SEC-011")
def test_the_key_cli_refuses_what_would_break_the_ground(tmp_path, capsys):
    path = tmp_path / "ground.keys"
    KeyRing({1: KeySlot(1, KEY)}).save(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    code, _, err = key_cli("new", "--keys", str(path), "--spi", "2", capsys=capsys)
    assert code == 2 and "no master key" in err and "Traceback" not in err
    code, _, err = key_cli("revoke", "--keys", str(path), "--spi", "1", capsys=capsys)
    assert code == 2 and "last active" in err
    code, _, err = key_cli("activate", "--keys", str(path), "--spi", "7", capsys=capsys)
    assert code == 2 and "no such slot" in err
    code, out, _ = key_cli("list", "--keys", str(path), capsys=capsys)
    assert code == 0 and KEY.hex() not in out and KeySlot(1, KEY).fingerprint() in out
    path.chmod(0o644)
    code, _, err = key_cli("list", "--keys", str(path), capsys=capsys)
    assert code == 2 and "chmod 600" in err


@pytest.mark.req("SEC-013")
def test_an_agent_with_tm_auth_seals_its_telemetry_and_the_ground_drops_a_forgers(tmp_path):
    tm_key = bytes(range(120, 152))
    board_keys = tmp_path / "tc.keys"
    ring = KeyRing({1: KeySlot(1, KEY), 7: KeySlot(7, tm_key, "telemetry")})
    ring.save(board_keys)
    rig = InProcessAgent(tmp_path / "agent", tc_keys=board_keys, tm_auth=True)
    sealing = SealingLink(rig.link.ground, Sealer(1, KEY), tm_ring=ring)
    rig.client = GroundClient(sealing)
    try:
        assert rig.send("PING", token=5).result["token"] == 5  # the report came sealed, and opened
        assert rig.hk()["tc_auth"] == "HMAC-SHA256"
        codec = Codec(DICTIONARY)
        rig.link.flight.publish(codec.encode_event("SAFE_ENTERED", {"reason": "forged"}, 0.0))  # under the agent
        rig.advance(2)
        assert not rig.events("SAFE_ENTERED") and sealing.tm_auth_failed == 1
        plain = GroundClient(rig.link.ground)  # a ground that does not check: sees sealed packets it cannot read
        try:
            for _ in range(3):  # housekeeping comes, read by this client alone
                rig.clock.advance(1.0)
                plain.poll(0)
            assert plain.bad_packets > 0 and not plain.latest
        finally:
            plain.close()
    finally:
        rig.close()


@pytest.mark.req("SEC-013")
def test_telemetry_sns_go_up_across_a_restart_that_lost_the_state_file(tmp_path, monkeypatch):
    """The boot count lives in state.json; the SNs' epoch does not rest on it alone: with that
    file lost (or damaged) a restart still seals above every SN the ground has seen."""
    tm_key = bytes(range(120, 152))
    board_keys = tmp_path / "tc.keys"
    ring = KeyRing({1: KeySlot(1, KEY), 7: KeySlot(7, tm_key, "telemetry")})
    ring.save(board_keys)
    highest, sealer = [], Sealer(1, KEY)  # one ground, sealing on across the board's restarts
    from tests import inproc

    start_s = inproc.T0_S
    for k, damage in enumerate((None, "lost", "damaged", "both lost")):
        monkeypatch.setattr(inproc, "T0_S", start_s + 120.0 * k)  # each start two minutes after the last
        state = tmp_path / "agent"
        if damage is not None:  # the copy before its last write too: the state lost whole
            (state / "state.json.bak").unlink(missing_ok=True)
        if damage == "lost":
            (state / "state.json").unlink()
        elif damage == "damaged":
            (state / "state.json").write_text("{")
        elif damage == "both lost":
            (state / "state.json").unlink()
            (state / "tm_epoch.json").unlink()
            (state / "tm_epoch.json.bak").unlink()  # both copies of the epoch
        sealer.last_sn += RESERVE_US  # the ground's clock, past the SNs the board reserved (a restart takes time)
        rig = InProcessAgent(state, tc_keys=board_keys, tm_auth=True)
        sealing = SealingLink(rig.link.ground, sealer, tm_ring=ring)
        rig.client = GroundClient(sealing)
        try:
            assert rig.send("NOOP").completed
            highest.append(sealing._tm_guard.highest[7])
            if damage is not None:
                assert rig.hk()["boot_count"] <= 2  # the boot count started again
        finally:
            rig.close()
    epochs = [sn >> 40 for sn in highest]
    assert epochs[1:3] == [epochs[0] + 1, epochs[0] + 2]  # one more each start, whatever the boot count said
    assert epochs[3] == epochs[0] + 6  # both files gone: the board's clock, in minutes (six after the first start)


def test_the_telemetry_epoch_file_is_checked_and_a_damaged_one_is_said_and_set_aside(tmp_path):
    from flight.link.sdls import MISSION_EPOCH_UNIX_S, TM_EPOCH_MAX, TmEpoch

    path = tmp_path / "tm_epoch.json"
    now = lambda: MISSION_EPOCH_UNIX_S + 600.0  # noqa: E731 - ten minutes into the mission's clock
    first = TmEpoch(path, 1, now)
    assert first.epoch == 10 and first.load_error is None and first.store_error is None
    assert TmEpoch(path, 1, now).epoch == 11 and TmEpoch(path, 40, now).epoch == 40  # the boot count, if larger
    path.write_text(path.read_text().replace("40", "41"))  # its checksum no longer matches
    backup = tmp_path / "tm_epoch.json.bak"
    backup.write_text(backup.read_text().replace("40", "41"))  # and its copy's: the clock is all that is left
    damaged = TmEpoch(path, 3, lambda: MISSION_EPOCH_UNIX_S + 6000.0)
    assert damaged.epoch == 100 and "tm_epoch.json unreadable" in damaged.load_error
    assert (tmp_path / "tm_epoch.json.corrupt").exists() and TmEpoch(path, 1, now).epoch == 101
    far = TmEpoch(tmp_path / "far.json", 1, lambda: 1e12)  # a clock far ahead: half the range, room for more starts
    assert far.epoch == TM_EPOCH_MAX // 2 and TmEpoch(tmp_path / "far.json", 1, lambda: 1e12).epoch == far.epoch + 1
    from flight.storage import write_checked_json

    write_checked_json(path, {"not": "an epoch"})  # checked, but not ours: said, never raised out of the agent's start
    odd = TmEpoch(path, 2, now)
    assert odd.epoch == 102 and "epoch is not a count" in odd.load_error  # the copy's 101, plus one
    (tmp_path / "a_file").write_text("")
    stuck = TmEpoch(tmp_path / "a_file" / "tm_epoch.json", 5, now)  # cannot be written: said, and sealing goes on
    assert stuck.epoch == 10 and stuck.store_error and "may reuse" in stuck.store_error


def test_tm_auth_needs_a_telemetry_slot(tmp_path):
    from flight.config import ConfigError, load_config

    keys = tmp_path / "tc.keys"
    KeyRing({1: KeySlot(1, KEY)}).save(keys)
    config = tmp_path / "agent.toml"
    config.write_text(f'[security]\ntc_keys = "{keys}"\ntm_auth = true\n')
    with pytest.raises(ConfigError, match="security.tm_auth"):
        load_config(config)
    config.write_text('[security]\ntm_auth = true\n')
    with pytest.raises(ConfigError, match="security.tm_auth"):
        load_config(config)
