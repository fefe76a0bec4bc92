"""COBS framing for byte streams (the serial link): packets in, frames out, and back.

A frame on the wire is ``0x00 + COBS(packet) + 0x00``. COBS removes every 0x00 from the
packet, so 0x00 only ever means "frame boundary" and a receiver finds the next packet
after any damage by waiting for the next 0x00 — at most one frame is lost per error.

The leading 0x00 costs one byte per packet (a 256-byte packet goes out as 260 bytes,
efficiency 0.985) and buys two things: a receiver that joined mid-frame, or whose
previous frame lost its closing 0x00 to line noise, or whose sender restarted in the
middle of a frame, still gets the *next* packet instead of losing it glued to the
fragment. Back-to-back delimiters therefore make empty frames; they are idle fill, not
errors, and are not counted. Frames without the leading 0x00 (another tool's plain
``COBS + 0x00``) are accepted too.

CRC checking is not done here: :func:`flight.link.packets.unpack` does it on what
:class:`Deframer` returns. The deframer only checks what framing can know — COBS
validity, a size limit and the CCSDS length field — so garbage that happens to decode
still meets the CRC one layer up.
"""

from __future__ import annotations

from typing import Callable

from cobs import cobs

from flight.link.packets import MAX_PACKET_LEN, PRIMARY_HEADER_LEN, packet_length

DELIMITER = b"\x00"
COBS_BLOCK_LEN = 254  # COBS adds one code byte per 254 data bytes (and one at the start)


def max_encoded_len(packet_len: int) -> int:
    """Worst-case COBS length of a ``packet_len``-byte packet, delimiters not included."""
    return packet_len + packet_len // COBS_BLOCK_LEN + 1


DEFAULT_MAX_FRAME_LEN = max_encoded_len(MAX_PACKET_LEN)


def encode_frame(packet: bytes) -> bytes:
    """``0x00 + COBS(packet) + 0x00``: one packet ready for the wire."""
    if not 0 < len(packet) <= MAX_PACKET_LEN:
        raise ValueError(f"packet of {len(packet)} bytes cannot be framed (1..{MAX_PACKET_LEN})")
    return DELIMITER + cobs.encode(packet) + DELIMITER


class Deframer:
    """Turns a byte stream into packets, dropping and counting whatever is not one.

    ``max_frame_len`` bounds the bytes kept between delimiters (encoded size); a longer
    run is dropped at once and everything up to the next 0x00 is skipped, so a line
    full of noise without a 0x00 never grows memory beyond that bound.

    Counters (cumulative, never reset here; a link takes differences):

    - ``bad_frames``: frames dropped — not COBS, too long, shorter than a primary header,
      or decoded length differing from the CCSDS length field;
    - ``skipped_bytes``: every non-delimiter byte thrown away (bad frames' bytes included),
      so ``skipped_bytes`` is the noise a line carried, counted in bytes.
    ``last_error`` says, with numbers, why the latest frame was dropped; ``on_drop``, if given, is told why each
    one is, as it is (the serial link passes them on, to be said).
    """

    def __init__(self, max_frame_len: int = DEFAULT_MAX_FRAME_LEN, on_drop: Callable[[str], None] | None = None):
        if max_frame_len < max_encoded_len(PRIMARY_HEADER_LEN + 1):
            raise ValueError(f"max_frame_len {max_frame_len} cannot hold even the smallest packet")
        self.max_frame_len = max_frame_len
        self.bad_frames = 0
        self.skipped_bytes = 0
        self.last_error = ""
        self._on_drop = on_drop
        self._buf = bytearray()
        self._hunting = False  # after an oversize run: skip up to the next delimiter

    @property
    def pending_bytes(self) -> int:
        """Bytes of an unfinished frame held for the next feed()."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every complete, well-formed packet they finish."""
        out: list[bytes] = []
        if not data:
            return out
        parts = bytes(data).split(DELIMITER)
        last = len(parts) - 1
        for i, part in enumerate(parts):
            closed = i < last  # a delimiter follows this part
            if self._hunting:
                self.skipped_bytes += len(part)
                if closed:
                    self._hunting = False
                continue
            if len(self._buf) + len(part) > self.max_frame_len:
                self._drop(len(self._buf) + len(part), f"frame over {self.max_frame_len} bytes without a delimiter")
                self._buf.clear()
                self._hunting = not closed
                continue
            if not closed:
                self._buf += part
                continue
            if self._buf:
                self._buf += part
                frame = bytes(self._buf)
                self._buf.clear()
            else:
                frame = part
            if frame:  # an empty frame is idle fill between delimiters
                packet = self._check(frame)
                if packet is not None:
                    out.append(packet)
        return out

    def reset(self) -> None:
        """Forget an unfinished frame (the line was reopened): it can never be completed."""
        if self._buf:
            self._drop(len(self._buf), f"partial frame of {len(self._buf)} bytes abandoned")
            self._buf.clear()
        self._hunting = False

    def _check(self, frame: bytes) -> bytes | None:
        try:
            packet = cobs.decode(frame)
        except cobs.DecodeError as exc:
            self._drop(len(frame), f"frame of {len(frame)} bytes is not valid COBS: {exc}")
            return None
        if len(packet) < PRIMARY_HEADER_LEN:
            self._drop(len(frame), f"frame decodes to {len(packet)} bytes, a primary header needs {PRIMARY_HEADER_LEN}")
            return None
        expected = packet_length(packet)
        if expected != len(packet):
            self._drop(len(frame), f"frame decodes to {len(packet)} bytes, its CCSDS header says {expected}")
            return None
        return packet

    def _drop(self, n_bytes: int, why: str) -> None:
        self.bad_frames += 1
        self.skipped_bytes += n_bytes
        self.last_error = why
        if self._on_drop is not None:
            self._on_drop(why)


__all__ = ["DEFAULT_MAX_FRAME_LEN", "DELIMITER", "Deframer", "encode_frame", "max_encoded_len"]
