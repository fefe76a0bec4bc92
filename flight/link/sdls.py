"""Authenticated telecommands, in the manner of CCSDS SDLS (355.0-B-2), for space packets.

A sealed telecommand is the plain one with a security header after its primary header and a
MAC before its CRC::

    primary header (6, length covers all)  SPI (2)  SN (8)  PUS header + data  MAC (16)  CRC (2)

- **SPI** (security parameter index) names the key slot; **SN** is the sender's sequence
  number, strictly increasing per slot: the ground uses its clock in microseconds (never less
  than its last one + 1). Two grounds sealing with one slot must keep their clocks within the
  window of each other (or use a slot each). A restarted ground seals above the SNs it used
  before, kept on disk (:class:`SnFloor`), so a clock that stepped back meanwhile costs nothing.
- **MAC**: HMAC-SHA256 (``cryptography``), truncated to 128 bits, over the primary header,
  SPI, SN and data: authentication only, as SDLS's authentication mode (the data stays
  readable; confidentiality is the link's, CurveZMQ).
- **Anti-replay** (:class:`ReplayGuard`): a packet is taken only if its SN is above the highest
  seen less ``window`` and was not seen within it (a console's commands and its file PDUs may
  arrive a little out of order). The highest SN is kept on disk as a *reservation*: written
  (atomically, checked) only when the SN passes the last reservation, as that SN plus
  ``reserve`` (5 s of the ground's clock); after a restart nothing at or below the reservation
  is taken, so a packet seen before the restart can never be taken again, at the cost of at
  most ``reserve`` of the ground's time refused after an agent's restart. A reservation that
  cannot be read, or is missing though the agent's state says one was written (the file lost
  on its own), refuses every SN up to the board's clock plus ``reserve`` on every slot, a floor
  kept in the file from then on. Not covered: a whole state directory wiped (the agent starts
  as new: the keys' rotation is lost with it too) or restored from an old copy (its old
  reservation is taken as it is): rotate the keys after either (deploy/README.md, "Lost keys").
  A reservation that cannot be written is counted and reported (``TC_REPLAY_NOT_KEPT``);
  commands still go.

:func:`open_tc` checks in the cheapest order and parses nothing beyond the headers before the
MAC has passed: length, CRC, SPI known and active, MAC, then the replay window.

**Keys** (:class:`KeyRing`): each slot is ``active`` (seals and verifies telecommands),
``revoked``, ``pending`` (the ground holds it, the agent may not yet: never used to seal) or
``master`` (a key-encryption key, SDLS's "master key": it only unwraps a new key uploaded by
KEY_LOAD, AES key wrap RFC 3394, and never authenticates a telecommand). The agent keeps the
keys it was given by command, still wrapped, and its revocations in a checked state file
(:class:`KeyOverlay`) over the provisioned key file, which it never writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import hashlib
import hmac
import os
import re
import secrets
import struct
import tempfile
import time
from collections import OrderedDict, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as chmac
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from flight.link.interface import FlightLink, GroundLink, Refused
from flight.link.packets import CRC_LEN, PRIMARY_HEADER_LEN, _crc
from flight.storage import (CorruptFile, ReadRefused, fsync_path, quarantine, read_checked_json, read_limited,
                            write_checked_json)

SPI_LEN, SN_LEN, MAC_LEN = 2, 8, 16
SN_MAX = (1 << (8 * SN_LEN)) - 1
SEC_HEADER_LEN = SPI_LEN + SN_LEN
OVERHEAD = SEC_HEADER_LEN + MAC_LEN
KEY_LEN = 32
RESERVE_US = 5_000_000      # what a reservation covers ahead of the highest SN (5 s of ground time)
WINDOW_US = 2_000_000       # how far below the highest SN a packet may still come (2 s)
GROUND_RESERVE_US = WINDOW_US // 2  # the ground's reservation of its SNs (SnFloor): within the window
MAX_SEEN = 65_536           # SNs remembered within the window (bounded)
_ALL_SLOTS = "*"             # the replay file's key for a floor over every slot
STATES = ("active", "revoked", "pending", "master", "telemetry")
_KEY_LINE = re.compile(r"^\s*(\d{1,5})\s+([0-9a-fA-F]{64})(?:\s+(active|revoked|pending|master|telemetry))?\s*$")
TM_SN_BOOT_SHIFT = 40       # a telemetry SN is boot count << 40 | a counter: increasing across restarts
TM_WINDOW = 4096            # telemetry SNs (packets, not microseconds) a packet may come behind the highest
REPLIES_KEPT = 4096         # direct replies' telemetry SNs the ground keeps, to refuse each again on either way
WRAPPED_LEN = KEY_LEN + 8  # RFC 3394 adds one 64-bit block


LINE_DAMAGE = ("short", "length", "crc")
"""The :class:`AuthError` kinds of a packet whose frame is wrong before any key is tried: line damage (counted as
a malformed packet, ``tc_bad_packets``), not a refused seal (``tc_auth_rejected``; found in audit: a noisy line
raised "forged or replayed" alarms)."""


class AuthError(ValueError):
    """A telecommand refused by the security layer; ``kind`` is what is counted."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class KeyFileError(ValueError):
    """A key file that cannot be used; the text names the file and the line."""


@dataclass
class KeySlot:
    spi: int
    key: bytes = field(repr=False)  # never in a log line or a traceback
    state: str = "active"

    @property
    def revoked(self) -> bool:
        return self.state == "revoked"

    @property
    def active(self) -> bool:
        return self.state == "active"

    def fingerprint(self) -> str:
        """What may be shown of a key: the first 8 hex digits of its SHA-256 (never the key)."""
        return hashlib.sha256(self.key).hexdigest()[:8]


@functools.lru_cache(maxsize=16)
def _keyed(key: bytes) -> chmac.HMAC:
    """HMAC-SHA256 with ``key`` set up (its padded key hashed), copied for each packet: a third
    of the cost of setting it up again. A few keys at most (a ring's slots, the telemetry key)."""
    return chmac.HMAC(key, hashes.SHA256())


def _mac(key: bytes, data: bytes) -> bytes:
    h = _keyed(key).copy()
    h.update(data)
    return h.finalize()[:MAC_LEN]


# A key file holds at most 65535 slots of about 90 characters each, with their comments.
KEY_FILE_LIMIT_BYTES = 16 << 20


class KeyRing:
    """The key slots a side holds: SPI -> 32-byte key and its state (:data:`STATES`)."""

    def __init__(self, slots: dict[int, KeySlot] | None = None, header: list[str] | None = None):
        self.slots = dict(slots or {})
        # The file's comments, written back by save so that a custodian's notes and install.sh's
        # header outlive a rotation: the lines before the first slot, those after the last, and
        # per slot the comment lines just above it and the comment on its own line.
        self.header: list[str] = list(header or [])
        self.tail: list[str] = []
        self.notes: dict[int, tuple[list[str], str]] = {}

    @classmethod
    def load(cls, path: Path | str, need_active: bool = True) -> KeyRing:
        """Lines ``SPI HEX-KEY [active|revoked|pending|master]`` (# comments; no word: active);
        refused if others may read the file, or (``need_active``) if no slot is active: every
        key file but the custodian's file of master keys (``sunlit-ground key split``)."""
        path = Path(path)
        try:
            # Bounded and never waited on: a FIFO or a device named as the key file is refused, not
            # blocked on (found in audit: the agent hung at start on one), and a huge file unread. A pipe is
            # refused too: a key file is read at the config's check and again where it is used, and a pipe
            # gives nothing the second time (found in review: taken at the check, it failed after).
            data, st = read_limited(path, KEY_FILE_LIMIT_BYTES)
            text = data.decode()
        except ReadRefused as exc:
            raise KeyFileError(f"{path}: {exc}") from None
        except OSError as exc:
            raise KeyFileError(f"{path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise KeyFileError(f"{path}: not a text file of 'SPI HEX-KEY [state]' lines") from None
        if st.st_mode & 0o077:
            raise KeyFileError(f"{path}: mode {st.st_mode & 0o777:o}, readable by others; chmod 600 it")
        slots: dict[int, KeySlot] = {}
        comments: list[str] = []  # since the last slot's line
        header: list[str] | None = None
        notes: dict[int, tuple[list[str], str]] = {}
        for n, raw in enumerate(text.splitlines(), 1):
            line, hashed, comment = raw.partition("#")
            if not line.strip():
                comments.append(raw.rstrip())
                continue
            m = _KEY_LINE.match(line)
            if not m:
                raise KeyFileError(f"{path}:{n}: expected 'SPI 64-HEX-DIGIT-KEY "
                                   "[active|revoked|pending|master|telemetry]'")
            spi = int(m.group(1))
            if not 1 <= spi <= 0xFFFF or spi in slots:
                raise KeyFileError(f"{path}:{n}: SPI {spi} out of 1..65535 or given twice")
            slots[spi] = KeySlot(spi, bytes.fromhex(m.group(2)), m.group(3) or "active")
            if header is None:
                header, comments = comments, []
            notes[spi], comments = (comments, (hashed + comment).rstrip()), []
        if need_active and not any(s.active for s in slots.values()):
            raise KeyFileError(f"{path}: no active key")
        if not slots:
            raise KeyFileError(f"{path}: no key")
        ring = cls(slots, header)
        ring.notes, ring.tail = notes, comments
        return ring

    def masters(self) -> list[int]:
        return sorted(s.spi for s in self.slots.values() if s.state == "master")

    def active(self) -> list[int]:
        return sorted(s.spi for s in self.slots.values() if s.active)

    def telemetry_slot(self) -> KeySlot | None:
        """The slot that seals telemetry (the highest ``telemetry`` one), if any."""
        slots = sorted((s for s in self.slots.values() if s.state == "telemetry"), key=lambda s: s.spi)
        return slots[-1] if slots else None

    def save(self, path: Path | str) -> None:
        """Write the file atomically, mode 600 from the start (the ground's key store), keeping
        the owner of the file it replaces (the server's user must still read it after a
        custodian, or root, changed it), and the comments it was read with. Under a lock of its
        folder, so that the temporary files a killed save left (each a copy of the keys) are
        removed first, and never one another save is writing (found in audit: they stayed, one
        more each kill)."""
        path = Path(path)
        try:
            folder: int | None = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            folder = None  # not readable: saved all the same, leftovers not looked for
        try:
            if folder is not None:
                try:
                    fcntl.flock(folder, fcntl.LOCK_EX)
                except OSError:  # a folder that takes no lock (NFS wants one open for writing: found in review):
                    pass  # saved all the same, leftovers not looked for
                else:
                    _remove_leftovers(path)
            self._save(path)
        finally:
            if folder is not None:
                os.close(folder)  # and the lock with it

    def _save(self, path: Path) -> None:
        try:
            owner: tuple[int, int] | None = (path.stat().st_uid, path.stat().st_gid)
        except OSError:
            owner = None
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # 0600, O_EXCL
        try:
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fd, *owner)
                except PermissionError:
                    pass  # not ours to give away: the file becomes this user's (deploy/README.md, "Keys")
            data = memoryview(self.dump().encode())
            while data:  # os.write may take less than all (a disk filling): the rest, or its error (found in
                data = data[os.write(fd, data):]  # audit: a cut-short file of keys was renamed over the whole one)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, path)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        fsync_path(path.parent)

    @staticmethod
    def new_key() -> bytes:
        return os.urandom(KEY_LEN)

    def dump(self) -> str:
        lines = list(self.header)
        for s in sorted(self.slots.values(), key=lambda s: s.spi):
            above, after = self.notes.get(s.spi, ([], ""))
            lines += above
            lines.append(f"{s.spi} {s.key.hex()}{'' if s.active else ' ' + s.state}{'  ' + after if after else ''}")
        return "".join(line + "\n" for line in lines + self.tail)


def _remove_leftovers(path: Path) -> None:
    """Delete the temporary files :meth:`KeyRing.save` of ``path`` left when killed (mkstemp's
    ``.NAME.`` + 8 characters + ``.tmp``): only that exact pattern, only plain files."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmp$")
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if pattern.match(leftover.name) and leftover.is_file() and not leftover.is_symlink():
            with contextlib.suppress(OSError):  # gone, or not ours to remove: the save goes on
                leftover.unlink()


def wrap_key(master: bytes, key: bytes) -> bytes:
    """A new telecommand key wrapped under a master key (AES-256 key wrap, RFC 3394)."""
    return aes_key_wrap(master, key)


def unwrap_key(master: bytes, wrapped: bytes) -> bytes:
    """The key inside ``wrapped``; ValueError if it was not wrapped under ``master`` or is damaged
    (RFC 3394's integrity check)."""
    if len(wrapped) != WRAPPED_LEN:
        raise ValueError(f"wrapped key: {len(wrapped)} bytes, expected {WRAPPED_LEN}")
    try:
        return aes_key_unwrap(master, wrapped)
    except InvalidUnwrap:
        raise ValueError("wrapped key does not unwrap under that master key (another key, or damaged)") from None


def _write_secret(path: Path, body: object) -> None:
    write_checked_json(path, body)
    os.chmod(path, 0o600)


class KeyOverlay:
    """The agent's changes to its provisioned keys, kept in the state directory (checked JSON,
    mode 600, in two copies: a damaged one falls back to the other): keys loaded by command,
    still wrapped under their master key, and revocations, each of one key (its fingerprint),
    not of a slot number. The provisioned file stays as installed (read-only under systemd);
    removing both copies returns the board to it (deploy/README.md, "Lost keys")."""

    def __init__(self, path: Path | str | None):
        self.path = Path(path) if path is not None else None
        self.loaded: dict[int, tuple[int, str]] = {}  # SPI -> (master SPI, wrapped key hex)
        self.revoked: dict[int, str] = {}              # SPI -> fingerprint of the key revoked
        self.load_error: str | None = None             # neither copy could be read: provisioned keys only
        self.problems: list[str] = []                  # what reading found (a copy damaged and set aside)
        self._on_disk: dict | None = None              # the body in force on disk, as read or last written

    def _copies(self) -> list[Path]:
        assert self.path is not None
        return [self.path, self.path.with_name(self.path.name + ".bak")]

    def read(self) -> None:
        if self.path is None:
            return
        errors = []
        for copy in self._copies():
            if not copy.exists():
                continue
            try:
                body = read_checked_json(copy)
                loaded = {int(k): (int(v[0]), str(v[1])) for k, v in body["loaded"].items()}
                revoked = {int(k): str(v) for k, v in body["revoked"].items()}
            except (CorruptFile, OSError, KeyError, IndexError, AttributeError, TypeError, ValueError) as exc:
                moved = quarantine(copy)
                errors.append(f"{copy.name} damaged{', set aside as ' + moved.name if moved else ''} ({exc})")
                continue
            self.loaded, self.revoked = loaded, revoked
            self._on_disk = body
            self.problems = [f"the other copy is in force: {e}" for e in errors]
            if errors:
                try:
                    self.write()  # both copies again
                except OSError:
                    pass
            return
        if errors:
            self.load_error = ("only the provisioned keys are in force, those loaded and revoked by command are "
                               "lost (deploy/README.md, \"Lost keys\"): " + "; ".join(errors))

    def write(self) -> None:
        if self.path is None:
            return
        body = {"loaded": {str(k): list(v) for k, v in self.loaded.items()},
                "revoked": {str(k): v for k, v in self.revoked.items()}}
        primary, backup = self._copies()
        # The backup first (but for the first change, below): read() takes the primary, so until the
        # primary is written nothing has changed, and a failure says so truly. A primary that then
        # fails puts the backup back, so that a damaged primary later cannot bring in a change the
        # command said was not made. One after the other, so a power cut between them leaves one whole.
        previous = self._on_disk
        if previous is None:  # the first change: no primary to keep it out, so a lone backup would bring
            _write_secret(primary, body)  # it in after a cut between the two (review): the primary first,
            self._on_disk = body          # which makes the change; a backup that fails is made next time
            with contextlib.suppress(OSError):
                _write_secret(backup, body)
            return
        _write_secret(backup, body)
        try:
            _write_secret(primary, body)
        except OSError:
            try:
                if previous is None:
                    backup.unlink(missing_ok=True)
                else:
                    _write_secret(backup, previous)
            except OSError:
                pass  # the primary, which read() takes first, still holds what it held
            raise
        self._on_disk = body

    def taken(self, spi: int) -> bool:
        """A slot number the overlay has used (loaded, or revoked): never given again."""
        return spi in self.loaded or spi in self.revoked

    def apply(self, ring: KeyRing) -> list[str]:
        """Put the overlay onto ``ring``; what could not be applied, one line each."""
        problems = list(self.problems)
        for spi, (master_spi, wrapped) in sorted(self.loaded.items()):
            master = ring.slots.get(master_spi)
            if spi in ring.slots or master is None or master.state != "master":
                problems.append(f"SPI {spi}: its master SPI {master_spi} is not a master key here, or the slot "
                                "is provisioned; left out")
                continue
            try:
                ring.slots[spi] = KeySlot(spi, unwrap_key(master.key, bytes.fromhex(wrapped)))
            except ValueError as exc:
                problems.append(f"SPI {spi}: {exc}; left out")
        for spi, fingerprint in sorted(self.revoked.items()):
            slot = ring.slots.get(spi)
            if slot is None or slot.state != "active":
                continue
            if slot.fingerprint() == fingerprint:
                slot.state = "revoked"
            else:  # the file was provisioned again with a new key in that slot: the revocation was of the old one
                problems.append(f"SPI {spi}: the key revoked ({fingerprint}) is not the one provisioned now "
                                f"({slot.fingerprint()}); the new one is active")
        if not ring.active():
            problems.append("no active telecommand key after the changes made by command: no command can be "
                            "taken; remove tc_keys_state* on the board (deploy/README.md, \"Lost keys\")")
        return problems


COUNTED_RESERVE_SNS = 4096
"""What a ground counting above its clock reserves on disk at a time: SNs, one per command sealed."""


class SnFloor:
    """The ground's SNs kept above those it used before a restart, whatever its clock did
    meanwhile: a reservation on disk (atomic, checked, mode 600), written when an SN passes it as
    that SN plus ``reserve_us`` (half the agent's window), at most once per ``reserve_us`` of
    sealing. Every SN used is at or below the reservation, and a restarted ground seals above it
    (or from its clock, once that is past it).

    Why: the SN is the ground's clock, and the agent refuses an SN more than its window below the
    highest it took, or one it took already. A ground whose clock stepped back (an NTP step, a
    dead RTC) kept its last SN while it ran, but lost it at a restart, and was refused until its
    clock caught up: hours, or for ever. With no step back, the clock is at most ``reserve_us``
    behind the reservation at a restart, so a ground's SNs run at most that far ahead of its
    clock, and grounds sharing a slot stay within the agent's window of each other.

    Only the ground's availability rests on this file, never the agent's safety: a lost or
    corrupt one is said (:attr:`error`) and sealing goes on from the clock. Several processes
    may seal with one file: a reservation never goes down, each write takes the larger under a
    lock, and a file that cannot be read is never written over."""

    def __init__(self, path: Path | str, reserve_us: int = GROUND_RESERVE_US):
        self.path = Path(path)
        self.reserve_us = int(reserve_us)
        self.reserved = 0
        self.error: str | None = None
        self._token = secrets.token_hex(8)  # this process's writes, told from another's (release)
        try:
            self.reserved = self._read()
        except (CorruptFile, OSError) as exc:
            self.error = f"{_why(self.path, exc)}; sealing from the clock"

    def _read(self) -> int:
        """The reservation (0: no file); OSError where the file is there but cannot be opened."""
        return self._read_body()[0]

    def _read_body(self) -> tuple[int, str]:
        """(the reservation, the token of the process that wrote it); (0, "") for no file."""
        try:
            with open(self.path, "rb"):
                pass
        except FileNotFoundError:
            return 0, ""
        body = read_checked_json(self.path)
        value = body.get("reserved_us") if isinstance(body, dict) else None
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= SN_MAX - self.reserve_us:
            raise CorruptFile(f"{self.path}: reserved_us is not a count of microseconds an SN can pass")
        by = body.get("by", "")
        return value, by if isinstance(by, str) else ""

    def passed(self, sn: int, counted: bool = False) -> int:
        """Called with each SN sealed: past the reservation, reserve ``reserve_us`` more on disk. The
        SN to seal with: ``sn``, or, for a ``counted`` one (counted up from a reservation, above the
        clock), one above another process's reservation that covers it. Two grounds started on one
        file with their clocks behind it both counted up from it, and sealed the same SNs: the agent
        took one's and refused the other's as replays (found in audit)."""
        if sn <= self.reserved:
            return sn
        # Counted SNs go one per command: a reserve of a count, not of a second (found in review: a ground that
        # jumped over another's reservation put a second more in the file, and one started next sealed past the
        # other's window, its every command refused as stale until its clock caught up)
        reserve = min(self.reserve_us, COUNTED_RESERVE_SNS) if counted else self.reserve_us
        target = self.reserved = sn + reserve  # tried once a reserve, even if the disk refuses
        try:
            with _locked(self.path):
                try:
                    current, by = self._read_body()
                except CorruptFile:
                    current, by = 0, ""  # written over: a corrupt reservation holds nothing
                if counted and sn <= current and by != self._token and current < SN_MAX - self.reserve_us:
                    sn = current + 1  # SNs another process may be counting through: go above them
                    target = self.reserved = sn + reserve
                if current < target:
                    write_checked_json(self.path, {"reserved_us": target, "by": self._token})
                else:
                    self.reserved = current
                    if by:  # another's reservation covers this process's SNs now: its release must not lower it
                        write_checked_json(self.path, {"reserved_us": current, "by": ""})
        except OSError as exc:
            self.error = f"{_why(self.path, exc)}; sealing from the clock"
            return sn
        self.error = None
        return sn

    def release(self, last_sn: int) -> None:
        """At a clean close: bring the reservation down to ``last_sn``, the last SN sealed, where this
        process wrote it last (no other has raised it since): a restart then seals from ``last_sn``
        + 1, not from a reserve ahead. Without it, grounds started and stopped in quick succession
        (a console run per command) each sealed up to ``reserve_us`` further ahead of their clock,
        and another ground on the slot sealing from its clock was refused as stale meanwhile."""
        if self.error is not None or not 0 < last_sn < self.reserved:
            return
        try:
            with _locked(self.path):
                try:
                    current, by = self._read_body()
                except CorruptFile:
                    return
                if by == self._token and last_sn < current:
                    write_checked_json(self.path, {"reserved_us": last_sn, "by": self._token})
                    self.reserved = last_sn
        except OSError as exc:
            self.error = f"{_why(self.path, exc)}; sealing from the clock"


@contextmanager
def _locked(path: Path):
    """Hold ``PATH.lock`` exclusively (another ground process updating the same file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and the lock with it


TM_FLOOR_PERIOD_S = 1.0  # the ground writes the highest telemetry SN it took at most this often


class TmFloor:
    """The highest telemetry SN the ground took, per slot, kept on disk (atomic, checked, mode
    600), so that a restarted ground refuses telemetry captured before it. Without it the
    ground's window was in memory only, and any sealed packet recorded before a restart could
    be played to it once after.

    Written when it went up, at most once per ``period_s`` (a file per packet would be a
    fsync per packet), from each packet taken and each flush of the link (:meth:`tick`: the
    client flushes at every poll, so the last packets of a pass are on disk a period after
    them), and at the link's close (:meth:`flush`): what arrived within the last ``period_s``
    before a ground stopped without closing (a kill, a power cut) can still be played to it once. Several processes may check telemetry with one file (the server and a direct
    console): each write takes the larger per slot, under a lock. Only the ground's view of
    telemetry rests on this file: a lost or unreadable one is said (:attr:`error`), and
    telemetry is taken from the window in memory as before."""

    def __init__(self, path: Path | str, period_s: float = TM_FLOOR_PERIOD_S,
                 now_s: Callable[[], float] = time.monotonic):
        self.path = Path(path)
        self.period_s = float(period_s)
        self._now_s = now_s
        self.load_error: str | None = None  # for the life of this process: what it lost at its start
        self.store_error: str | None = None  # the last write's, until one works
        self.stored: dict[int, int] = {}
        try:
            self.stored = self._read()
        except CorruptFile as exc:
            quarantine(self.path)  # kept aside to be looked at (NAME.corrupt), and a new one written
            self.load_error = f"{_why(self.path, exc)}; telemetry from before this start may be taken once"
        except OSError as exc:
            self.load_error = f"{_why(self.path, exc)}; telemetry from before this start may be taken once"
        self.highest = dict(self.stored)
        self._written_s: float | None = None

    @property
    def error(self) -> str | None:
        """What the operators should know of this file now, or None."""
        return self.load_error or self.store_error

    def _read(self) -> dict[int, int]:
        try:
            with open(self.path, "rb"):
                pass
        except FileNotFoundError:
            return {}
        body = read_checked_json(self.path)
        highest = body.get("highest") if isinstance(body, dict) else None
        if not isinstance(highest, dict):
            raise CorruptFile(f"{self.path}: highest is not a table of slots")
        out = {}
        for spi, sn in highest.items():
            if not (isinstance(spi, str) and spi.isascii() and spi.isdigit() and isinstance(sn, int)
                    and not isinstance(sn, bool) and 0 <= sn <= SN_MAX):
                raise CorruptFile(f"{self.path}: highest[{spi!r}] is not an SN")
            out[int(spi)] = sn
        return out

    def taken(self, spi: int, sn: int) -> None:
        """Called with each telemetry SN the ground took."""
        if sn <= self.highest.get(spi, -1):
            return
        self.highest[spi] = sn
        self.tick()

    def tick(self) -> None:
        """Write what went up, if the last write is a period old (the link's flush calls it each
        poll, so the last packets of a pass are on disk a period after them, not at the next pass)."""
        now = self._now_s()
        if self._written_s is None or now - self._written_s >= self.period_s:
            if any(sn > self.stored.get(spi, -1) for spi, sn in self.highest.items()):
                self._written_s = now
                self.flush()

    def flush(self) -> None:
        """Write what went up since the last write, now."""
        if all(sn <= self.stored.get(spi, -1) for spi, sn in self.highest.items()):
            return
        try:
            with _locked(self.path):
                try:
                    current = self._read()
                except CorruptFile:
                    current = {}  # written over: a corrupt file holds nothing
                merged = {spi: max(sn, current.get(spi, -1)) for spi, sn in self.highest.items()}
                merged.update({spi: sn for spi, sn in current.items() if spi not in merged})
                if merged != current:
                    write_checked_json(self.path, {"highest": {str(spi): sn for spi, sn in sorted(merged.items())}})
                self.stored = merged
        except OSError as exc:
            self.store_error = f"{_why(self.path, exc)}; telemetry from before a restart may be taken once"
            return
        self.store_error = None


def _why(path: Path, exc: Exception) -> str:
    if isinstance(exc, CorruptFile):
        return str(exc)
    return f"{path}: {getattr(exc, 'strerror', None) or exc}"


class Sealer:
    """The ground's side: seals each telecommand with one slot's key and the next SN."""

    def __init__(self, spi: int, key: bytes, clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
                 last_sn: int = 0, floor: SnFloor | None = None):
        """``floor``: the SNs used before a restart (:class:`SnFloor`); none: the clock alone."""
        if len(key) != KEY_LEN:
            raise ValueError(f"key: {len(key)} bytes, expected {KEY_LEN}")
        self.spi, self._key, self._clock_us = spi, key, clock_us
        self.floor = floor
        self.last_sn = last_sn if floor is None else max(last_sn, floor.reserved)

    def next_sn(self) -> int:
        clock_us = int(self._clock_us())
        sn = max(self.last_sn + 1, clock_us)
        if self.floor is not None:
            sn = self.floor.passed(sn, counted=sn > clock_us)
        self.last_sn = sn
        return sn

    def seal(self, packet: bytes) -> bytes:
        """The sealed form of a plain telecommand (with its CRC)."""
        if len(packet) < PRIMARY_HEADER_LEN + CRC_LEN:
            raise ValueError("not a packet")
        inner = packet[PRIMARY_HEADER_LEN:-CRC_LEN]
        length = struct.unpack_from(">H", packet, 4)[0] + OVERHEAD
        if length > 0xFFFF:
            raise ValueError(f"a {len(packet)}-byte packet has no room for the {OVERHEAD} bytes of the seal")
        header = packet[:4] + struct.pack(">H", length)
        sec = struct.pack(">HQ", self.spi, self.next_sn())
        body = header + sec + inner
        body += _mac(self._key, body)
        return body + _crc(body).to_bytes(2, "big")


def open_tc(raw: bytes, ring: KeyRing, guard: ReplayGuard | None, state: str = "active") -> tuple[int, int, bytes]:
    """(SPI, SN, the plain telecommand) of a sealed one, or :class:`AuthError` saying why.
    ``state``: the slots that may have sealed it (``telemetry`` for the ground's check of telemetry)."""
    if len(raw) < PRIMARY_HEADER_LEN + OVERHEAD + CRC_LEN:
        raise AuthError("short", f"{len(raw)} bytes: too short for a sealed packet")
    if struct.unpack_from(">H", raw, 4)[0] + 1 + PRIMARY_HEADER_LEN != len(raw):
        raise AuthError("length", "packet length field does not match the packet")
    if _crc(raw[:-CRC_LEN]) != int.from_bytes(raw[-CRC_LEN:], "big"):
        raise AuthError("crc", "CRC mismatch")
    spi, sn = struct.unpack_from(">HQ", raw, PRIMARY_HEADER_LEN)
    slot = ring.slots.get(spi)
    if slot is None:
        raise AuthError("unknown_spi", f"SPI {spi}: no such key slot")
    if slot.state != state:
        raise AuthError(slot.state, f"SPI {spi}: key {slot.state}, not one for "
                                    f"{'telecommands' if state == 'active' else state}")
    body, mac = raw[:-CRC_LEN - MAC_LEN], raw[-CRC_LEN - MAC_LEN:-CRC_LEN]
    if not hmac.compare_digest(_mac(slot.key, body), mac):
        raise AuthError("bad_mac", f"SPI {spi}: MAC does not verify (forged, corrupted or another key)")
    if guard is not None:
        guard.check(spi, sn)
    inner = raw[PRIMARY_HEADER_LEN + SEC_HEADER_LEN:-CRC_LEN - MAC_LEN]
    length = struct.unpack_from(">H", raw, 4)[0] - OVERHEAD
    plain = raw[:4] + struct.pack(">H", length) + inner
    return spi, sn, plain + _crc(plain).to_bytes(2, "big")


class ReplayGuard:
    """Per SPI: the highest SN taken, the SNs taken within the window, and the reservation on
    disk (see the module's text). ``check`` raises :class:`AuthError` or records the SN."""

    def __init__(self, path: Path | str | None, window: int = WINDOW_US, reserve: int = RESERVE_US, *,
                 expected: bool = False, now_us: Callable[[], int] = lambda: time.time_ns() // 1000):
        """``expected``: the file was written before (the agent's state says so), so a missing one
        is taken as an unreadable one: losing it must not reopen the window to packets captured
        before. A missing one not expected (the first start with keys) is written at once, empty,
        so that from then on its absence is a loss (:attr:`kept`). ``now_us``: the clock that
        bounds SNs after a loss."""
        self.path = Path(path) if path is not None else None
        self.window, self.reserve = window, reserve
        self.highest: dict[int, int] = {}
        self.floor: dict[int, int] = {}      # after a restart: nothing at or below this
        self.reserved: dict[int, int] = {}
        self._seen: dict[int, set[int]] = {}
        self._order: dict[int, deque[int]] = {}  # the same SNs in the order taken: pruned from the left
        self.load_error: str | None = None
        self.store_error: str | None = None
        self.store_failures = 0  # writes of the reservation that failed (reported by the link service)
        self._floor_all = 0  # every slot, after a reservation was lost: kept in the file ("*") from then on
        self._now_us = now_us
        self._load(expected)

    def _load(self, expected: bool) -> None:
        if self.path is None:
            return
        if not self.path.exists():
            if expected:
                self._lost(f"{self.path.name} missing though one was written before")
            else:
                self._write()  # the first start with keys: from now on, its absence is a loss
            return
        try:
            body = read_checked_json(self.path)
            floor_all = int(body.pop(_ALL_SLOTS, 0))
            self.floor = {int(k): int(v) for k, v in body.items()}
        except (CorruptFile, OSError, AttributeError, TypeError, ValueError) as exc:
            quarantine(self.path)  # kept aside to be looked at (NAME.corrupt), not read again
            self._lost(f"{self.path.name} unreadable ({exc})")
            return
        self._floor_all = floor_all
        self.reserved = dict(self.floor)

    def _lost(self, why: str) -> None:
        """No reservation to trust: refuse every SN up to now on the board's clock, plus the
        reserve, for every slot, and keep that floor in the file so a later restart keeps it."""
        self._floor_all = self._now_us() + self.reserve
        self.floor = {}
        self.load_error = f"{why}; SNs up to now + {self.reserve} us refused"
        self._write()

    @property
    def kept(self) -> bool:
        """Whether the window is on disk now (False: no path, or it could not be written)."""
        return self.path is not None and self.path.is_file()

    def floor_of(self, spi: int) -> int:
        return max(self.floor.get(spi, 0), self._floor_all)

    def taken(self, spi: int, sn: int) -> bool:
        """Whether ``sn`` was taken within the window; records nothing (the floor is :meth:`check`'s)."""
        return sn in self._seen.get(spi, ())

    def check(self, spi: int, sn: int) -> None:
        if sn <= self.floor_of(spi):
            raise AuthError("replay", f"SPI {spi}: SN {sn} at or below {self.floor_of(spi)}, taken before a restart")
        top = self.highest.get(spi, 0)
        seen = self._seen.setdefault(spi, set())
        order = self._order.setdefault(spi, deque())
        if sn <= top - self.window:
            raise AuthError("stale", f"SPI {spi}: SN {sn} older than the window ({top - self.window})")
        if sn in seen:
            raise AuthError("replay", f"SPI {spi}: SN {sn} taken already")
        seen.add(sn)
        order.append(sn)
        if sn > top:
            self.highest[spi] = sn
            if sn >= self.reserved.get(spi, 0):
                self._reserve(spi, sn + self.reserve)
        # Forget what fell out of the window (SNs come nearly in order: the oldest are on the left).
        # More than MAX_SEEN within the window: the oldest go, and nothing at or below them is taken.
        limit = self.highest[spi] - self.window
        while order and (order[0] <= limit or len(order) > MAX_SEEN):
            old = order.popleft()
            seen.discard(old)
            if old > limit:
                self.floor[spi] = max(self.floor_of(spi), old)

    def _reserve(self, spi: int, value: int) -> None:
        self.reserved[spi] = value
        self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        body: dict[str, int] = {str(k): v for k, v in self.reserved.items()}
        if self._floor_all:
            body[_ALL_SLOTS] = self._floor_all
        try:
            write_checked_json(self.path, body)
            self.store_error = None
        except OSError as exc:
            # Commands still go (a full disk must not lock the ground out), and the window in memory
            # still refuses replays; a restart before the next good write may take one. Counted and
            # reported (TC_REPLAY_NOT_KEPT) so that the operators know.
            self.store_failures += 1
            self.store_error = f"{self.path.name}: {exc.strerror or exc}"


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _chosen(ring: KeyRing, path: Path, spi: int | None) -> tuple[int, bytes]:
    active = ring.active()
    chosen = active[-1] if spi is None else spi
    if chosen not in active:
        raise KeyFileError(f"{path}: no active slot {chosen} (active: {active})")
    return chosen, ring.slots[chosen].key


class SealingLink(GroundLink):
    """A ground link whose every telecommand goes out sealed (the ground server's, a direct
    console's); everything else is the wrapped link's."""

    def __init__(self, link: GroundLink, sealer: Sealer, tm_ring: KeyRing | None = None,
                 tm_floor: TmFloor | None = None):
        """``tm_ring``: check every telemetry packet against its ``telemetry`` slot (the agent's
        ``[security] tm_auth``): a packet that does not open is dropped and counted. ``tm_floor``:
        the highest telemetry SNs taken before, kept on disk: nothing at or below them is taken."""
        self._link = link
        self.sealer = sealer
        self._tm_ring = tm_ring
        # The stream's packets and the direct replies each against a window of their own: a reply is sealed as it
        # goes, ahead of the stream queued before it, and on one window it made those stale (found in audit: with
        # the stream backed up, one reply had thousands of packets, each come once, refused as replays).
        self._tm_guard = ReplayGuard(None, window=TM_WINDOW) if tm_ring is not None else None
        # The replies' SNs, the newest REPLIES_KEPT (replies are few: one a command), each refused again on either
        # way down however far the replies have moved on (found in review: with a window of their own, one old
        # enough was forgotten, and replayed on a lagging stream it was taken)
        self._replies: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._reply_floor: dict[int, int] = {}  # per SPI: replies at or below were forgotten (past REPLIES_KEPT)
        self._tm_floor = tm_floor if tm_ring is not None else None
        if self._tm_floor is not None:
            self._tm_guard.floor.update(self._tm_floor.highest)
        self.tm_auth_failed = 0   # telemetry dropped: not sealed, forged, another key
        self.tm_line_damaged = 0  # telemetry dropped: damaged on the line before any key was tried (LINE_DAMAGE)
        self.tm_replayed = 0      # telemetry dropped: an SN seen already or too old
        self.tm_last_error = ""
        self._path: Path | None = None
        self._spi: int | None = None
        self._stamp: tuple[int, int, int] | None = None
        self.key_error: str | None = None  # the key file changed and could not be used: the last key seals
        self._masters: list[int] = []  # master slots found in the key file (a key_warning)
        self._masters_stamp: tuple[int, int, int] | None = None

    @property
    def inner(self) -> GroundLink:
        """The link it seals for (its device state, a serial line's, is that link's)."""
        return self._link

    def backlog_bytes(self) -> int:
        return self._link.backlog_bytes()

    def line_rate_bps(self) -> float | None:
        return self._link.line_rate_bps()

    @property
    def key_warning(self) -> str | None:
        """What is wrong with how the key file is kept, though it seals: a master key in it. Read
        from the file again if it changed since (the server's status asks from its own thread:
        the sealer is left to the link's)."""
        stamp = _stamp(self._path) if self._path is not None else None
        if stamp is not None and stamp != self._masters_stamp:
            self._masters_stamp = stamp
            try:
                self._masters = KeyRing.load(self._path).masters()
            except (KeyFileError, ValueError):
                pass  # key_error says so once the link reads it
        if self._masters:
            return (f"{self._path} holds master key slot(s) {self._masters}: the server needs active slots only; "
                    "move the masters to the custodian's file (sunlit-ground key split)")
        return None

    @property
    def sn_error(self) -> str | None:
        """Why the SNs used are not kept on disk now (:class:`SnFloor`), or None."""
        floor = self.sealer.floor
        return floor.error if floor is not None else None

    @property
    def tm_sn_error(self) -> str | None:
        """Why the highest telemetry SNs taken are not kept on disk now (:class:`TmFloor`), or None."""
        return self._tm_floor.error if self._tm_floor is not None else None

    @classmethod
    def from_key_file(cls, link: GroundLink, path: Path | str, spi: int | None = None,
                      tm_auth: bool = False, clock_us: Callable[[], int] | None = None,
                      sn_path: Path | str | None = None, tm_sn_path: Path | str | None = None) -> SealingLink:
        """Seal with slot ``spi`` of a key file (default: the highest active one). With no ``spi``
        the file is read again whenever it changes (a rotation activated by ``sunlit-ground key
        activate`` is in force from the next command, without a restart). The SNs used are kept
        in ``sn_path`` (:class:`SnFloor`; default: beside the key file, ``PATH.sn``), with
        ``tm_auth`` the highest telemetry SNs taken in ``tm_sn_path`` (:class:`TmFloor`; default:
        ``PATH.tm_sn``); ``clock_us``: the ground's clock (tests)."""
        path = Path(path)
        ring = KeyRing.load(path)
        if tm_auth and ring.telemetry_slot() is None:
            raise KeyFileError(f"{path}: no telemetry slot ('SPI HEX telemetry') to check telemetry with")
        clock = {} if clock_us is None else {"clock_us": clock_us}
        floor = SnFloor(path.with_name(path.name + ".sn") if sn_path is None else sn_path)
        tm_floor = None
        if tm_auth:
            tm_floor = TmFloor(path.with_name(path.name + ".tm_sn") if tm_sn_path is None else tm_sn_path)
        sealing = cls(link, Sealer(*_chosen(ring, path, spi), floor=floor, **clock), ring if tm_auth else None,
                      tm_floor)
        sealing._path, sealing._spi, sealing._stamp = path, spi, _stamp(path)
        sealing._masters, sealing._masters_stamp = ring.masters(), sealing._stamp
        return sealing

    def _follow_key_file(self) -> None:
        if self._path is None or self._spi is not None:
            return
        stamp = _stamp(self._path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            ring = KeyRing.load(self._path)
            chosen, key = _chosen(ring, self._path, None)
            if self._tm_ring is not None and ring.telemetry_slot() is None:
                raise KeyFileError(f"{self._path}: no telemetry slot left")
        except (KeyFileError, ValueError) as exc:
            self.key_error = str(exc)
            return
        self.key_error = None
        if self._tm_ring is not None:
            self._tm_ring = ring
        if chosen != self.sealer.spi or key != self.sealer._key:
            self.sealer = Sealer(chosen, key, self.sealer._clock_us, self.sealer.last_sn, self.sealer.floor)

    def pollables(self) -> list:
        return self._link.pollables()

    def send(self, packet: bytes) -> bool:
        self._follow_key_file()
        return self._link.send(self.sealer.seal(packet))

    def receive(self) -> list[bytes]:
        return [packet for packet, _stream in self.receive_tagged()]

    def receive_tagged(self) -> list[tuple[bytes, bool]]:
        got = self._link.receive_tagged()
        if self._tm_ring is None:
            return got
        out = []
        for raw, stream in got:
            try:
                spi, sn, plain = open_tc(raw, self._tm_ring, None, "telemetry")
                self._check_tm(spi, sn, stream)
            except AuthError as exc:
                if exc.kind in ("replay", "stale"):
                    self.tm_replayed += 1
                elif exc.kind in LINE_DAMAGE and self._sealed_by_us(raw):  # damaged on the line, not forged
                    self.tm_line_damaged += 1
                else:
                    self.tm_auth_failed += 1
                self.tm_last_error = str(exc)[:160]
                continue
            if self._tm_floor is not None:
                self._tm_floor.taken(spi, sn)
            out.append((plain, stream))
        return out

    def _sealed_by_us(self, raw: bytes) -> bool:
        """Whether a packet whose frame failed (LINE_DAMAGE) names a telemetry slot of ours where a seal puts its
        SPI: a sealed packet the line damaged (malformed, as the board counts a damaged telecommand; found in
        audit: counted as forged), not one never sealed (plain telemetry has no CRC of its own, so it fails the
        seal's: counted as refused, ``tm_auth_failed``)."""
        if len(raw) < PRIMARY_HEADER_LEN + 2 or self._tm_ring is None:
            return False
        slot = self._tm_ring.slots.get(struct.unpack_from(">H", raw, PRIMARY_HEADER_LEN)[0])
        return slot is not None and slot.state == "telemetry"

    def _check_tm(self, spi: int, sn: int, stream: bool) -> None:
        """A telemetry SN: the stream's against its window; a direct reply's against the replies taken and the
        stream's (sealed as it goes, a reply a whole window behind the stream is stale). A direct reply does not
        move the stream's window: it is sealed after the stream queued before it, and read first it made that
        stale (found in audit: thousands of packets, each come once, refused as replays). Either way, an SN
        taken the other way is refused."""
        guard = self._tm_guard
        if (spi, sn) in self._replies:
            raise AuthError("replay", f"SPI {spi}: SN {sn} taken already")
        if stream:
            guard.check(spi, sn)
            return
        if sn <= guard.floor_of(spi):
            raise AuthError("replay", f"SPI {spi}: SN {sn} at or below {guard.floor_of(spi)}, taken before a restart")
        if guard.taken(spi, sn):
            raise AuthError("replay", f"SPI {spi}: SN {sn} taken already")
        if sn <= guard.highest.get(spi, 0) - TM_WINDOW:
            raise AuthError("stale", f"SPI {spi}: SN {sn} older than the stream's window "
                                     f"({guard.highest[spi] - TM_WINDOW})")
        if sn <= self._reply_floor.get(spi, 0):
            raise AuthError("replay", f"SPI {spi}: SN {sn} at or below the replies forgotten "
                                      f"({self._reply_floor[spi]})")
        self._replies[(spi, sn)] = None
        if len(self._replies) > REPLIES_KEPT:  # those the stream's window has passed go first (it refuses them)
            passed = [key for key in self._replies if key[1] <= guard.highest.get(key[0], 0) - TM_WINDOW]
            for key in passed[:len(self._replies) - REPLIES_KEPT]:
                del self._replies[key]
            while len(self._replies) > REPLIES_KEPT:  # else the oldest, and no reply at or below it is taken again
                (old_spi, old_sn), _ = self._replies.popitem(last=False)
                self._reply_floor[old_spi] = max(self._reply_floor.get(old_spi, 0), old_sn)

    def reset_commands(self) -> None:
        self._link.reset_commands()

    def flush(self) -> None:
        if self._tm_floor is not None:
            self._tm_floor.tick()
        self._link.flush()

    def close(self) -> None:
        if self._tm_floor is not None:
            self._tm_floor.flush()
        if self.sealer.floor is not None:
            self.sealer.floor.release(self.sealer.last_sn)
        self._link.close()

    def __getattr__(self, name: str):
        return getattr(self._link, name)  # stats, kind, backlog_bytes, line_rate_bps ...


TM_EPOCH_MAX = (1 << (8 * SN_LEN - TM_SN_BOOT_SHIFT)) - 1
MISSION_EPOCH_UNIX_S = 1_735_689_600  # 2025-01-01T00:00:00Z: TmEpoch's fallback counts minutes from it


class TmEpoch:
    """The telemetry SNs' epoch, the bits above :data:`TM_SN_BOOT_SHIFT`: one more than the last
    start's, kept on disk (checked, atomic) apart from the agent's state file, so that SNs never
    go back after a restart. Taken from the boot count alone, they went back whenever the state
    file was lost or unreadable, and a ground still running refused every packet after as stale.

    The epoch is the largest of the boot count, the largest copy on file plus one, and, where both
    copies are missing or unreadable, the minutes since :data:`MISSION_EPOCH_UNIX_S` on the board's
    clock (a board does not start twice a minute; 24 bits of minutes last until 2056). Two copies
    (``NAME`` and ``NAME.bak``, written one after the other): with one, a file lost or damaged took
    the epoch back to the clock's minutes, below the last start's after a crash loop of starts
    within a minute, and a second loss repeated it (found in audit: epochs 10, 11, 12, then 10, 10).
    Only the ground's view of the telemetry rests on it: a file that cannot be written is said
    (:attr:`store_error`), and telemetry is sealed all the same."""

    def __init__(self, path: Path | str, boot_count: int, now_s: Callable[[], float]):
        self.path = Path(path)
        self.load_error: str | None = None
        self.store_error: str | None = None
        copies = (self.path, self.path.with_name(self.path.name + ".bak"))
        stored: list[int] = []
        errors: list[str] = []
        for copy in copies:
            if not copy.exists():
                continue
            try:
                body = read_checked_json(copy)
                epoch = body.get("epoch") if isinstance(body, dict) else None
                if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= TM_EPOCH_MAX:
                    raise CorruptFile(f"{copy.name}: epoch is not a count of starts")
                stored.append(epoch)
            except (CorruptFile, OSError) as exc:
                quarantine(copy)
                errors.append(f"{copy.name} unreadable ({exc})")
        if stored:
            floor = max(stored) + 1
            if errors:
                self.load_error = f"{'; '.join(errors)}; the other copy in force"
        else:
            if errors:
                self.load_error = f"{'; '.join(errors)}; telemetry SNs from the board's clock"
            # At most half the range: a clock far ahead must leave room for the starts after it.
            floor = min(int((now_s() - MISSION_EPOCH_UNIX_S) // 60), TM_EPOCH_MAX // 2)
        self.epoch = min(max(int(boot_count), floor, 1), TM_EPOCH_MAX)
        failed: list[OSError] = []
        for copy in copies:  # one after the other: a power cut leaves one whole, and the larger is read
            try:
                write_checked_json(copy, {"epoch": self.epoch})
            except OSError as exc:
                failed.append(exc)
        if len(failed) == len(copies):  # one copy written keeps the next start above this one
            exc = failed[0]
            self.store_error = f"{self.path.name}: {exc.strerror or exc}; the next start may reuse telemetry SNs"


class TelemetrySealingLink(FlightLink):
    """The agent's link with every telemetry packet sealed (``[security] tm_auth``): the ground
    can tell the board's telemetry from a forger's. SNs are the start's epoch (:class:`TmEpoch`)
    << 40 plus a counter, so they increase across restarts whatever the board's clock says;
    packets are sealed as they leave (a played-back one gets a new SN), after the packet store."""

    def __init__(self, link: FlightLink, slot: KeySlot, epoch: int):
        self._link = link
        self.sealer = Sealer(slot.spi, slot.key, clock_us=lambda: 0, last_sn=epoch << TM_SN_BOOT_SHIFT)

    def pollables(self) -> list:
        return self._link.pollables()

    def receive(self) -> list:
        return self._link.receive()

    def reply(self, peer, packet: bytes) -> bool:
        sealed = self._seal(packet)
        return sealed is not None and self._link.reply(peer, sealed)

    def publish(self, packet: bytes) -> bool:
        sealed = self._seal(packet)
        return sealed is not None and self._link.publish(sealed)

    def stream_reaches(self, peer) -> bool:
        return self._link.stream_reaches(peer)

    def take_refused(self) -> Refused:  # FlightLink's default would hide the wrapped link's from __getattr__
        return self._link.take_refused()

    @property
    def reply_shares_queue(self) -> bool:  # the wrapped link's: a class attribute __getattr__ never reaches (an audit:
        return self._link.reply_shares_queue  # a report refused on a full serial queue was offered to it again)

    def _seal(self, packet: bytes) -> bytes | None:
        try:
            return self.sealer.seal(packet)
        except ValueError:  # no room for the seal (no packet the agent makes comes near): counted as dropped
            self._link.stats.tx_dropped += 1
            return None

    def flush(self) -> None:
        self._link.flush()

    def backlog_bytes(self) -> int:
        return self._link.backlog_bytes()

    def line_rate_bps(self) -> float | None:
        return self._link.line_rate_bps()

    def wants_write(self) -> bool:
        return self._link.wants_write()

    def write_pollables(self) -> list:
        return self._link.write_pollables()

    def close(self) -> None:
        self._link.close()

    def __getattr__(self, name: str):
        return getattr(self._link, name)  # stats, kind, config, subscribers ...
