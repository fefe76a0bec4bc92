"""The agent's key commands and the link's lower plumbing (the in-process link), as found in audit."""

from __future__ import annotations

import pytest

from flight.link.packets import unpack
from tests.inproc import InProcessAgent


@pytest.mark.req("LNK-009")
def test_a_commands_reports_reach_the_ground_once_over_the_memory_link(tmp_path):
    """Found in audit: the in-process link said its stream never reached the sender, so every
    report went twice (on the stream and as a reply), filling its bounded queue twice as fast and
    counted by the ground as duplicates. One peer, one queue: as on a serial line, once."""
    with InProcessAgent(tmp_path / "agent") as rig:
        taken: list[tuple[bytes, bool]] = []
        receive = rig.link.ground.receive_tagged

        def spied() -> list[tuple[bytes, bool]]:
            out = receive()
            taken.extend(out)
            return out

        rig.link.ground.receive_tagged = spied
        before = rig.client.duplicates
        assert rig.send("NOOP").completed
        verification = [p for p, _stream in taken if unpack(p).service == 1]
        assert len(verification) >= 2  # accepted and completed at least
        assert len(set(verification)) == len(verification), f"{len(verification)} reports, some the same"
        assert rig.client.duplicates == before


def _request(name: str, **args):
    from flight.link.definitions import DICTIONARY
    from flight.link.messages import CommandRequest

    return CommandRequest(DICTIONARY.command(name), args, 1, None)


@pytest.mark.req("SEC-011")
def test_a_revocation_the_disk_refuses_changes_nothing_an_earlier_revocation_of_the_slot_kept(tmp_path):
    """Found in audit: slot 1 re-provisioned with a new key after its old one was revoked by command; a
    KEY_REVOKE of the new key that the disk refused said "not revoked" but dropped the old key's revocation
    from memory, and the next change written (a KEY_LOAD) dropped it from the disk: the old key, put back in
    the file, would be taken again."""
    from flight.agent.dispatcher import CommandFailed
    from flight.agent.keys import KeyManager
    from flight.link.sdls import KeyOverlay, KeyRing, KeySlot, wrap_key

    old, new, other, master = bytes(range(32)), bytes(range(1, 33)), bytes(range(2, 34)), bytes(range(64, 96))
    state = tmp_path / "tc_keys_state"
    first = KeyOverlay(state)
    first.revoked[1] = KeySlot(1, old).fingerprint()
    first.write()
    overlay = KeyOverlay(state)
    overlay.read()
    ring = KeyRing({1: KeySlot(1, new), 2: KeySlot(2, other), 100: KeySlot(100, master, "master")})
    overlay.apply(ring)
    assert ring.slots[1].active  # the revocation was of the old key
    keys = KeyManager(lambda *_a, **_k: None, ring, overlay, sealed_with=lambda: 2)

    state.unlink()
    state.mkdir()  # the disk refuses the state file (a directory in its place)
    (state / "x").touch()
    with pytest.raises(CommandFailed, match="not revoked"):
        keys.handlers()["KEY_REVOKE"].run(_request("KEY_REVOKE", spi=1))
    assert ring.slots[1].active
    (state / "x").unlink()
    state.rmdir()

    keys.handlers()["KEY_LOAD"].run(_request("KEY_LOAD", spi=3, master=100,
                                             wrapped=wrap_key(master, bytes(range(9, 41))).hex()))
    kept = KeyOverlay(state)
    kept.read()
    back = KeyRing({1: KeySlot(1, old), 2: KeySlot(2, other), 100: KeySlot(100, master, "master")})
    kept.apply(back)  # the old file put back: its revoked key stays revoked
    assert back.slots[1].revoked and back.slots[3].active
