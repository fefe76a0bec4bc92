"""The key manager: the telecommand key slots, changed only by authenticated command.

SDLS key management, in small (CCSDS 355.1-B-1's OTAR, activation and deactivation): a new key
comes up wrapped under a master key (KEY_LOAD), a slot is revoked (KEY_REVOKE), and KEY_LIST
says what is in force without showing a key. The ring is the one the link service checks every
telecommand against, so a change holds from the next packet; it is kept across restarts by
the overlay in the state directory (flight/link/sdls.py ``KeyOverlay``), written before the
ring changes: a command reports completed only once the change would survive a power cut.
"""

from __future__ import annotations

from typing import Any, Callable

from flight.agent.dispatcher import CommandFailed, Handler
from flight.agent.ports import Component, EventPort
from flight.link.dictionary import FailureCode
from flight.link.messages import CommandRequest
from flight.link.sdls import KeyOverlay, KeyRing, KeySlot, unwrap_key
from flight.storage import redact_paths


class KeyManager(Component):
    NAME = "key manager"
    COMMANDS = ("KEY_LOAD", "KEY_REVOKE", "KEY_LIST")
    EVENTS = ("KEY_LOADED", "KEY_REVOKED")
    CHANNELS = ("tc_keys_active",)

    def __init__(self, emit: EventPort, ring: KeyRing | None, overlay: KeyOverlay | None,
                 sealed_with: Callable[[], int | None] = lambda: None):
        """``ring`` None: telecommands are not authenticated, and every key command fails saying so.
        ``sealed_with``: the slot that sealed the command being run (the link service's port)."""
        self._emit = emit
        self._ring = ring
        self._overlay = overlay
        self._sealed_with = sealed_with

    def handlers(self) -> dict[str, Handler]:
        return {"KEY_LOAD": Handler(self._load), "KEY_REVOKE": Handler(self._revoke),
                "KEY_LIST": Handler(self._list)}

    def _keys(self) -> tuple[KeyRing, KeyOverlay]:
        if self._ring is None or self._overlay is None:
            raise CommandFailed("telecommand authentication is OFF ([security] tc_keys): there are no key slots")
        return self._ring, self._overlay

    def _load(self, req: CommandRequest) -> dict[str, Any]:
        ring, overlay = self._keys()
        spi, master_spi, wrapped = int(req.args["spi"]), int(req.args["master"]), req.args["wrapped"].strip()
        if spi in ring.slots or overlay.taken(spi):
            state = ring.slots[spi].state if spi in ring.slots else "used before"
            raise CommandFailed(f"spi: slot {spi} is taken ({state}); a slot is never reused",
                                FailureCode.OUT_OF_RANGE)
        master = ring.slots.get(master_spi)
        if master is None or master.state != "master":
            raise CommandFailed(f"master: slot {master_spi} is not a master key here (masters: "
                                f"{sorted(s.spi for s in ring.slots.values() if s.state == 'master')})",
                                FailureCode.OUT_OF_RANGE)
        try:
            key = unwrap_key(master.key, bytes.fromhex(wrapped))
        except ValueError as exc:
            raise CommandFailed(f"wrapped: {exc}", FailureCode.BAD_ARGUMENTS) from None
        same = [s.spi for s in ring.slots.values() if s.key == key]
        if same:  # a revoked key must not come back under a new number
            raise CommandFailed(f"wrapped: that key is slot {same[0]}'s ({ring.slots[same[0]].state}); a key is "
                                "never loaded twice", FailureCode.BAD_ARGUMENTS)
        overlay.loaded[spi] = (master_spi, wrapped.lower())
        try:
            overlay.write()
        except OSError as exc:
            del overlay.loaded[spi]
            raise CommandFailed(f"the key could not be kept ({exc.strerror or exc}); not loaded") from None
        slot = ring.slots[spi] = KeySlot(spi, key)
        self._emit("KEY_LOADED", spi=spi, fingerprint=slot.fingerprint())
        return {"spi": spi, "fingerprint": slot.fingerprint(), "active": ring.active()}

    def _revoke(self, req: CommandRequest) -> dict[str, Any]:
        ring, overlay = self._keys()
        spi = int(req.args["spi"])
        slot = ring.slots.get(spi)
        if slot is None:
            raise CommandFailed(f"spi: no slot {spi} (slots: {sorted(ring.slots)})", FailureCode.OUT_OF_RANGE)
        if slot.revoked:
            return {"spi": spi, "active": ring.active(), "already": True}
        if not slot.active:
            raise CommandFailed(f"spi: slot {spi} is a {slot.state} key, not an active telecommand key; it is "
                                "changed in the key file (deploy/README.md, \"Keys\")", FailureCode.OUT_OF_RANGE)
        if ring.active() == [spi]:
            raise CommandFailed(f"spi: slot {spi} is the last active key; load another first (KEY_LOAD)",
                                FailureCode.OUT_OF_RANGE)
        sealer = self._sealed_with()
        if sealer is None:  # released from a time tag or a sequence: which slot the ground seals with is unknown
            raise CommandFailed("spi: KEY_REVOKE runs only as the ground sends it, not from a time tag or a "
                                "sequence: the slot that sealed it must not be the one revoked",
                                FailureCode.OUT_OF_RANGE)
        if sealer == spi:  # the ground seals with it: revoking it would lock the ground out
            raise CommandFailed(f"spi: slot {spi} sealed this command; activate the new slot on the ground "
                                "(sunlit-ground key activate), then revoke this one with a command it seals",
                                FailureCode.OUT_OF_RANGE)
        # A revocation of the key this slot held before it was provisioned again is put back on failure, not
        # dropped (found in audit: the next change written left it off the disk, the command having said "not
        # revoked")
        before = overlay.revoked.get(spi)
        overlay.revoked[spi] = slot.fingerprint()
        try:
            overlay.write()
        except OSError as exc:
            if before is None:
                del overlay.revoked[spi]
            else:
                overlay.revoked[spi] = before
            raise CommandFailed(f"the revocation could not be kept ({exc.strerror or exc}); not revoked") from None
        slot.state = "revoked"
        self._emit("KEY_REVOKED", spi=spi)
        return {"spi": spi, "active": ring.active()}

    def _list(self, req: CommandRequest) -> dict[str, Any]:
        ring, overlay = self._keys()
        return {"slots": [{"spi": s.spi, "state": s.state, "fingerprint": s.fingerprint()}
                          for s in sorted(ring.slots.values(), key=lambda s: s.spi)],
                "state_error": None if overlay.load_error is None else redact_paths(overlay.load_error)}

    def telemetry(self) -> dict[str, Any]:
        return {"tc_keys_active": 0 if self._ring is None else len(self._ring.active())}
