"""Authenticated telecommands, in the manner of CCSDS SDLS (355.0-B-2), for space packets.

A sealed telecommand is the plain one with a security header after its primary header and a
MAC before its CRC::

    primary header (6, length covers all)  SPI (2)  SN (8)  PUS header + data  MAC (16)  CRC (2)

- **SPI** (security parameter index) names the key slot; **SN** is the sender's sequence
  number, strictly increasing per slot: the ground uses its clock in microseconds (never less
  than its last one + 1), so a restarted ground or a second console never goes backwards.
- **MAC**: HMAC-SHA256 (``cryptography``), truncated to 128 bits, over the primary header,
  SPI, SN and data: authentication only, as SDLS's authentication mode (the data stays
  readable; confidentiality is the link's, CurveZMQ).
- **Anti-replay** (:class:`ReplayGuard`): a packet is taken only if its SN is above the highest
  seen less ``window`` and was not seen within it (a console's commands and its file PDUs may
  arrive a little out of order). The highest SN is kept on disk as a *reservation*: written
  (atomically, checked) only when the SN passes the last reservation, as that SN plus
  ``reserve`` (5 s of the ground's clock); after a restart nothing at or below the reservation
  is taken, so a packet seen before the restart can never be taken again, at the cost of at
  most ``reserve`` of the ground's time refused after an agent's restart.

:func:`open_tc` checks in the cheapest order and parses nothing beyond the headers before the
MAC has passed: length, CRC, SPI known and not revoked, MAC, then the replay window.
"""

from __future__ import annotations

import hmac
import os
from collections import deque
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as chmac

from flight.link.interface import GroundLink
from flight.link.packets import CRC_LEN, PRIMARY_HEADER_LEN, _crc
from flight.storage import CorruptFile, read_checked_json, write_checked_json

SPI_LEN, SN_LEN, MAC_LEN = 2, 8, 16
SEC_HEADER_LEN = SPI_LEN + SN_LEN
OVERHEAD = SEC_HEADER_LEN + MAC_LEN
KEY_LEN = 32
RESERVE_US = 5_000_000      # what a reservation covers ahead of the highest SN (5 s of ground time)
WINDOW_US = 2_000_000       # how far below the highest SN a packet may still come (2 s)
MAX_SEEN = 65_536           # SNs remembered within the window (bounded)
_KEY_LINE = re.compile(r"^\s*(\d{1,5})\s+([0-9a-fA-F]{64})(\s+revoked)?\s*$")


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
    key: bytes
    revoked: bool = False


def _mac(key: bytes, data: bytes) -> bytes:
    h = chmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()[:MAC_LEN]


class KeyRing:
    """The key slots a side holds: SPI -> 32-byte key, each active or revoked."""

    def __init__(self, slots: dict[int, KeySlot] | None = None):
        self.slots = dict(slots or {})

    @classmethod
    def load(cls, path: Path | str) -> KeyRing:
        """Lines ``SPI HEX-KEY [revoked]`` (# comments); refused if others may read the file."""
        path = Path(path)
        try:
            st = path.stat()
            text = path.read_text()
        except OSError as exc:
            raise KeyFileError(f"{path}: {exc.strerror or exc}") from None
        if st.st_mode & 0o077:
            raise KeyFileError(f"{path}: mode {st.st_mode & 0o777:o}, readable by others; chmod 600 it")
        slots: dict[int, KeySlot] = {}
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0]
            if not line.strip():
                continue
            m = _KEY_LINE.match(line)
            if not m:
                raise KeyFileError(f"{path}:{n}: expected 'SPI 64-HEX-DIGIT-KEY [revoked]'")
            spi = int(m.group(1))
            if not 1 <= spi <= 0xFFFF or spi in slots:
                raise KeyFileError(f"{path}:{n}: SPI {spi} out of 1..65535 or given twice")
            slots[spi] = KeySlot(spi, bytes.fromhex(m.group(2)), bool(m.group(3)))
        if not any(not s.revoked for s in slots.values()):
            raise KeyFileError(f"{path}: no active key")
        return cls(slots)

    @staticmethod
    def new_key() -> bytes:
        return os.urandom(KEY_LEN)

    def dump(self) -> str:
        return "".join(f"{s.spi} {s.key.hex()}{' revoked' if s.revoked else ''}\n" for s in self.slots.values())


class Sealer:
    """The ground's side: seals each telecommand with one slot's key and the next SN."""

    def __init__(self, spi: int, key: bytes, clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
                 last_sn: int = 0):
        if len(key) != KEY_LEN:
            raise ValueError(f"key: {len(key)} bytes, expected {KEY_LEN}")
        self.spi, self._key, self._clock_us = spi, key, clock_us
        self.last_sn = last_sn

    def next_sn(self) -> int:
        self.last_sn = max(self.last_sn + 1, int(self._clock_us()))
        return self.last_sn

    def seal(self, packet: bytes) -> bytes:
        """The sealed form of a plain telecommand (with its CRC)."""
        if len(packet) < PRIMARY_HEADER_LEN + CRC_LEN:
            raise ValueError("not a packet")
        inner = packet[PRIMARY_HEADER_LEN:-CRC_LEN]
        length = struct.unpack_from(">H", packet, 4)[0] + OVERHEAD
        header = packet[:4] + struct.pack(">H", length)
        sec = struct.pack(">HQ", self.spi, self.next_sn())
        body = header + sec + inner
        body += _mac(self._key, body)
        return body + _crc(body).to_bytes(2, "big")


def open_tc(raw: bytes, ring: KeyRing, guard: ReplayGuard | None) -> tuple[int, int, bytes]:
    """(SPI, SN, the plain telecommand) of a sealed one, or :class:`AuthError` saying why."""
    if len(raw) < PRIMARY_HEADER_LEN + OVERHEAD + CRC_LEN:
        raise AuthError("short", f"{len(raw)} bytes: too short for a sealed telecommand")
    if struct.unpack_from(">H", raw, 4)[0] + 1 + PRIMARY_HEADER_LEN != len(raw):
        raise AuthError("length", "packet length field does not match the packet")
    if _crc(raw[:-CRC_LEN]) != int.from_bytes(raw[-CRC_LEN:], "big"):
        raise AuthError("crc", "CRC mismatch")
    spi, sn = struct.unpack_from(">HQ", raw, PRIMARY_HEADER_LEN)
    slot = ring.slots.get(spi)
    if slot is None:
        raise AuthError("unknown_spi", f"SPI {spi}: no such key slot")
    if slot.revoked:
        raise AuthError("revoked", f"SPI {spi}: key revoked")
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

    def __init__(self, path: Path | str | None, window: int = WINDOW_US, reserve: int = RESERVE_US):
        self.path = Path(path) if path is not None else None
        self.window, self.reserve = window, reserve
        self.highest: dict[int, int] = {}
        self.floor: dict[int, int] = {}      # after a restart: nothing at or below this
        self.reserved: dict[int, int] = {}
        self._seen: dict[int, set[int]] = {}
        self._order: dict[int, deque[int]] = {}  # the same SNs in the order taken: pruned from the left
        self.load_error: str | None = None
        self.store_error: str | None = None
        self._load()

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            body = read_checked_json(self.path)
            self.floor = {int(k): int(v) for k, v in body.items()}
        except (CorruptFile, OSError, AttributeError, TypeError, ValueError) as exc:
            # Unreadable: refuse every SN up to now on the ground's clock, plus the reserve.
            self.load_error = f"{self.path.name} unreadable ({exc}); SNs up to now + {self.reserve} us refused"
            self.floor = {}
            self._corrupt_floor = time.time_ns() // 1000 + self.reserve
            return
        self.reserved = dict(self.floor)

    def floor_of(self, spi: int) -> int:
        return self.floor.get(spi, getattr(self, "_corrupt_floor", 0))

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
        if self.path is not None:
            try:
                write_checked_json(self.path, {str(k): v for k, v in self.reserved.items()})
                self.store_error = None
            except OSError as exc:  # commands still go; a restart before the next write may take a replay
                self.store_error = f"{self.path.name}: {exc.strerror or exc}"


class SealingLink(GroundLink):
    """A ground link whose every telecommand goes out sealed (the ground server's, a direct
    console's); everything else is the wrapped link's."""

    def __init__(self, link: GroundLink, sealer: Sealer):
        self._link = link
        self.sealer = sealer

    @classmethod
    def from_key_file(cls, link: GroundLink, path: Path | str, spi: int | None = None) -> SealingLink:
        """Seal with slot ``spi`` of a key file (default: the highest active one)."""
        ring = KeyRing.load(path)
        active = sorted(s.spi for s in ring.slots.values() if not s.revoked)
        chosen = active[-1] if spi is None else spi
        if chosen not in active:
            raise KeyFileError(f"{path}: no active slot {chosen} (active: {active})")
        return cls(link, Sealer(chosen, ring.slots[chosen].key))

    def pollables(self) -> list:
        return self._link.pollables()

    def send(self, packet: bytes) -> bool:
        return self._link.send(self.sealer.seal(packet))

    def receive(self) -> list[bytes]:
        return self._link.receive()

    def receive_tagged(self) -> list[tuple[bytes, bool]]:
        return self._link.receive_tagged()

    def reset_commands(self) -> None:
        self._link.reset_commands()

    def flush(self) -> None:
        self._link.flush()

    def close(self) -> None:
        self._link.close()

    def __getattr__(self, name: str):
        return getattr(self._link, name)  # stats, kind, backlog_bytes, line_rate_bps ...
