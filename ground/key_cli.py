"""``sunlit-ground key``: the key custodian's side of telecommand key rotation.

The ground's key file (the server's ``[[spacecraft]] tc_keys``, mode 600) holds the same slots
as the board but the master: the server seals with active slots and never needs a master, so
``key split --keys F --master-keys M`` moves the provisioned file's masters to the custodian's
own file M (mode 600, kept off the server's computer between rotations). A leaked server file
then cannot load keys on board. A rotation (deploy/README.md, "Keys"):

1. ``key new --keys F --master-keys M --spi N``: a fresh key in slot N, marked ``pending`` (the
   server never seals with a pending slot), and the KEY_LOAD command that carries it, wrapped
   under a master key of M (AES key wrap, RFC 3394): only the board, which holds the master,
   can unwrap it. Without ``--master-keys`` the master is read from F (a file not yet split).
2. An operator sends that KEY_LOAD and checks it with KEY_LIST (the fingerprints match).
3. ``key activate --keys F --spi N``: the server seals with the highest active slot and reads
   the file again when it changes, so the next command goes out under slot N.
4. An operator sends KEY_REVOKE spi=OLD; ``key revoke --keys F --spi OLD`` records it here.

``key sn-floor --sn-file S (--above N | --at TIME)`` is not a rotation: after the ground's clock
stepped back with its SN file lost, the agent refuses every command as stale (a KEY_LOAD too);
it raises the reservation in S so that the ground, restarted, seals above the agent's highest SN.

No subcommand prints a key: only fingerprints (the first 8 hex digits of its SHA-256). The
files' comments are kept; a slot moved by ``split`` takes its own with it, and ``new`` notes
when and under which master it made a slot.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from typing import Any, Callable

from flight.link.sdls import GROUND_RESERVE_US, SN_MAX, WINDOW_US, KeyFileError, KeyRing, KeySlot, SnFloor, wrap_key
from ground.cli_args import printable as _printable  # a newline in a file name must not end a comment

EXIT_FAILED, EXIT_INPUT = 1, 2
SN_FLOOR_MAX_AHEAD_S = 86_400.0  # key sn-floor refuses more than this past the computer's clock unless --force


class KeyCommandError(ValueError):
    pass


def _ring(path: str) -> KeyRing:
    return KeyRing.load(path)


def _master(ring: KeyRing, spi: int | None) -> KeySlot:
    masters = ring.masters()
    if not masters:
        raise KeyCommandError("no master key in the file: a new key can only go up wrapped under one; after "
                              "key split, name the custodian's file: --master-keys FILE (deploy/README.md, \"Keys\")")
    chosen = masters[-1] if spi is None else spi
    if chosen not in masters:
        raise KeyCommandError(f"--master {chosen}: not a master slot (masters: {masters})")
    return ring.slots[chosen]


def _cmd_new(args: argparse.Namespace) -> int:
    ring = _ring(args.keys)
    if not 1 <= args.spi <= 0xFFFF:
        raise KeyCommandError(f"--spi {args.spi}: out of 1..65535")
    if args.spi in ring.slots:
        raise KeyCommandError(f"--spi {args.spi}: slot taken ({ring.slots[args.spi].state}); a slot is never reused")
    masters = KeyRing.load(args.master_keys, need_active=False) if args.master_keys else ring
    if args.master_keys and args.spi in masters.slots:
        raise KeyCommandError(f"--spi {args.spi}: slot taken by a master in --master-keys; a slot is never reused")
    master = _master(masters, args.master)
    slot = KeySlot(args.spi, KeyRing.new_key(), "pending")
    ring.slots[slot.spi] = slot
    made = time.strftime("%Y-%m-%d", time.gmtime())
    ring.notes[slot.spi] = ([f"# slot {slot.spi}: made by sunlit-ground key new on {made} (UTC), "
                             f"sent up wrapped under master {master.spi}"], "")
    ring.save(args.keys)
    wrapped = wrap_key(master.key, slot.key).hex()
    print(f"slot {slot.spi} pending, fingerprint {slot.fingerprint()}; send, then check with KEY_LIST:")
    print(f"KEY_LOAD spi={slot.spi} master={master.spi} wrapped={wrapped}")
    print(f"then: sunlit-ground key activate --keys {args.keys} --spi {slot.spi}")
    if not args.master_keys:
        print(f"note: the master is in {args.keys}, which the server reads; move it out: "
              f"sunlit-ground key split --keys {args.keys} --master-keys FILE", file=sys.stderr)
    return 0


def _cmd_split(args: argparse.Namespace) -> int:
    """Move the master slots of the server's key file to the custodian's file: written there and
    read back first, so that a failure anywhere leaves the masters in both files, never in neither."""
    ring = _ring(args.keys)
    moved = {spi: ring.slots[spi] for spi in ring.masters()}
    if not moved:
        raise KeyCommandError(f"--keys {args.keys}: no master slot to move")
    target = os.path.abspath(args.master_keys)
    if not os.path.isdir(os.path.dirname(target)):
        raise KeyCommandError(f"--master-keys {args.master_keys}: no such directory")
    if os.path.exists(target) and os.path.samefile(target, args.keys):
        raise KeyCommandError(f"--master-keys {args.master_keys}: the same file as --keys; nothing moved")
    held = KeyRing.load(target, need_active=False) if os.path.exists(target) else KeyRing(header=[
        "# Sunlit master keys (key-encryption keys), moved by sunlit-ground key split out of",
        f"# {_printable(os.path.abspath(args.keys))}. The custodian's file: keep it off the server's computer",
        "# between rotations; key new --master-keys reads it. Lost or leaked: deploy/README.md, \"Lost keys\"."])
    for spi, slot in moved.items():
        there = held.slots.get(spi)
        if there is not None and (there.key != slot.key or there.state != "master"):
            raise KeyCommandError(f"--master-keys {args.master_keys}: slot {spi} there is another key "
                                  f"({there.state} {there.fingerprint()}, not master {slot.fingerprint()}); nothing moved")
        held.slots[spi] = slot
        if spi in ring.notes and not (there is not None and spi in held.notes):
            held.notes[spi] = ring.notes[spi]
    held.save(target)
    try:
        back = KeyRing.load(target, need_active=False)
    except KeyFileError as exc:  # a medium that keeps no Unix modes (FAT) shows it readable by all
        raise KeyCommandError(f"--master-keys: written, but it cannot be read back as a key file ({exc}); "
                              f"the masters stay in {args.keys} too: use a medium that keeps file modes") from None
    if any(spi not in back.slots or back.slots[spi].key != slot.key for spi, slot in moved.items()):
        raise KeyCommandError(f"--master-keys {args.master_keys}: read back other than written; the masters "
                              f"stay in {args.keys} too")
    for spi in moved:
        del ring.slots[spi]
        ring.notes.pop(spi, None)
    try:
        ring.save(args.keys)
    except OSError as exc:
        raise KeyCommandError(f"--keys {args.keys}: cannot be written ({exc.strerror or exc}); the masters are in "
                              f"both files now: run key split again") from None
    print(f"master slot(s) {sorted(moved)} moved to {args.master_keys} "
          f"({', '.join(moved[spi].fingerprint() for spi in sorted(moved))}); {args.keys} keeps {sorted(ring.slots)}")
    print(f"keep {args.master_keys} with the custodian, off the server's computer between rotations; "
          f"key new takes it: --master-keys {args.master_keys}")
    return 0


def _set_state(args: argparse.Namespace, state: str, allowed: tuple[str, ...]) -> int:
    ring = _ring(args.keys)
    slot = ring.slots.get(args.spi)
    if slot is None or slot.state not in allowed:
        article = "an" if allowed[0][0] in "aeiou" else "a"
        raise KeyCommandError(f"--spi {args.spi}: {'no such slot' if slot is None else 'slot is ' + slot.state}; "
                              f"only {article} {' or '.join(allowed)} slot can be made {state}")
    if state == "revoked" and slot.active and ring.active() == [slot.spi]:
        raise KeyCommandError(f"--spi {args.spi}: the last active slot; activate another first")
    slot.state = state
    ring.save(args.keys)
    print(f"slot {slot.spi} {state} (fingerprint {slot.fingerprint()}); active: {ring.active()}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    ring = _ring(args.keys)
    for slot in sorted(ring.slots.values(), key=lambda s: s.spi):
        print(f"{slot.spi:>5}  {slot.state:<8} {slot.fingerprint()}")
    return 0


def _cmd_sn_floor(args: argparse.Namespace) -> int:
    """Raise the ground's SN reservation (:class:`SnFloor`) so that it seals above the agent's highest
    SN from its next start: the way back after its clock stepped back with the file lost, when every
    command (a KEY_LOAD too) is refused as stale."""
    if args.at is not None:
        try:
            when = datetime.fromisoformat(args.at.replace("Z", "+00:00"))
        except ValueError:
            raise KeyCommandError(f"--at {args.at!r}: not an ISO 8601 time (2026-12-04T18:00:00Z)") from None
        if when.tzinfo is None:
            raise KeyCommandError(f"--at {args.at!r}: give the time zone (Z for UTC)")
        above = int(when.timestamp() * 1_000_000)
    else:
        if args.above < 0:
            raise KeyCommandError(f"--above {args.above}: an SN is not negative")
        above = args.above + WINDOW_US
    ahead_s = above / 1e6 - time.time()
    if above + 2 * GROUND_RESERVE_US > SN_MAX:  # the reservation written, and the reserve a reader allows past it
        raise KeyCommandError(f"{above}: past the largest SN ({SN_MAX}) less a reservation: a typing error?")
    if ahead_s > SN_FLOOR_MAX_AHEAD_S and not args.force:
        raise KeyCommandError(f"{above}: {ahead_s / 86400:.1f} days ahead of this computer's clock; the ground's SNs "
                              "would stay that far ahead for good (every ground on the slot with them): check the "
                              "number, or --force")
    floor = SnFloor(args.sn_file)
    if floor.error is not None:
        raise KeyCommandError(f"{floor.error}: mend or move it first")
    before = floor.reserved
    floor.passed(above)
    if floor.error is not None:
        raise KeyCommandError(floor.error)
    if floor.reserved == before:
        print(f"{args.sn_file}: already above {above} ({before}); nothing written")
    else:
        print(f"{args.sn_file}: reservation {before} -> {floor.reserved}; restart the server (or console) to seal above it")
    return 0


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (KeyFileError, KeyCommandError) as exc:
            print(f"sunlit-ground key: {exc}", file=sys.stderr)
            return EXIT_INPUT
        except OSError as exc:
            print(f"sunlit-ground key: {exc.filename or getattr(args, 'keys', '')}: {exc.strerror or exc}",
                  file=sys.stderr)
            return EXIT_FAILED

    return run


def add_key_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``key`` and its subcommands to a parser's subparsers; each sets ``func``."""
    key = subparsers.add_parser("key", help="telecommand key rotation on the ground's key file (KEY_LOAD, KEY_REVOKE)",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = key.add_subparsers(dest="key_cmd", required=True)

    def common(p: argparse.ArgumentParser, spi: bool = True) -> None:
        p.add_argument("--keys", required=True, help="the ground's key file ([[spacecraft]] tc_keys, mode 600)")
        if spi:
            p.add_argument("--spi", type=int, required=True, help="the slot")

    new = sub.add_parser("new", help="a new pending slot, and the KEY_LOAD that carries it wrapped")
    common(new)
    new.add_argument("--master", type=int, help="the master slot to wrap it under (default: the highest)")
    new.add_argument("--master-keys", help="the custodian's file of master keys (key split); default: --keys")
    new.set_defaults(func=_guarded(_cmd_new))
    split = sub.add_parser("split", help="move the master slots out of the server's key file to the custodian's")
    common(split, spi=False)
    split.add_argument("--master-keys", required=True, help="the custodian's file of master keys (mode 600; "
                       "made if missing)")
    split.set_defaults(func=_guarded(_cmd_split))
    activate = sub.add_parser("activate", help="seal with this slot from now on (after KEY_LOAD completed)")
    common(activate)
    activate.set_defaults(func=_guarded(lambda a: _set_state(a, "active", ("pending",))))
    revoke = sub.add_parser("revoke", help="record a slot revoked (after KEY_REVOKE completed)")
    common(revoke)
    revoke.set_defaults(func=_guarded(lambda a: _set_state(a, "revoked", ("active", "pending"))))
    lst = sub.add_parser("list", help="the slots: SPI, state, fingerprint (never a key)")
    common(lst, spi=False)
    lst.set_defaults(func=_guarded(_cmd_list))
    floor = sub.add_parser("sn-floor", help="seal above the agent's highest SN from the next start (the ground's "
                           "clock stepped back and its SN file was lost: every command refused as stale)")
    floor.add_argument("--sn-file", required=True, help="the ground's SN reservation: the server's ID.tc_sn beside "
                       "its archive, a direct console's KEYFILE.sn (made if missing)")
    which = floor.add_mutually_exclusive_group(required=True)
    which.add_argument("--above", type=int, help="the number TC_AUTH_REJECTED gives for a stale command "
                       "('older than the window (N)'), or any SN at or below the agent's highest")
    which.add_argument("--at", help="a UTC time at or after the last command the board took, read from a "
                       "clock that was right then (ISO 8601: 2026-12-04T18:00:00Z)")
    floor.add_argument("--force", action="store_true", help="take a value more than a day ahead of this "
                       "computer's clock (its clock is the one that is wrong)")
    floor.set_defaults(func=_guarded(_cmd_sn_floor))
    return key
