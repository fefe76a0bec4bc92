"""Training checkpoints that survive a power cut: one file, written atomically, SHA-256 checked.

Layout: ``SUNLITC2`` magic, 4-byte big-endian header length, a JSON header (step, data
position, job metadata, SHA-256 of the payload, and the checkpoint's receipt where the writer gives
one: a checkpoint goes down as a product does, ground/receipts.py), the payload (an ``.npz`` of every array:
weights, optimizer state), then the SHA-256 of everything before it, header included: a
flipped bit in the step or the data position must not resume a job at the wrong place. A
checkpoint either loads exactly as written or is refused with :class:`CorruptFile`; the
previous one is kept until the new one is in place. Files of the first layout (``SUNLITCK``,
no digest over the header) are refused: a flipped bit in their step would load.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from flight.storage import CorruptFile, write_atomic

MAGIC = b"SUNLITC2"
MAGIC_V1 = b"SUNLITCK"  # the first layout: the payload's digest only; refused
_HEADER_LEN = struct.Struct(">I")
_DIGEST_LEN = 32


@dataclass(frozen=True)
class Checkpoint:
    step: int
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    receipt: dict[str, Any] | None = None  # as read (None: written without one)
    payload_sha256: str = ""  # as read: the state's SHA-256, which its receipt names


ReceiptFor = Callable[[str], dict[str, Any]]
"""The receipt of a checkpoint whose state (its payload) has this SHA-256."""


def encode_checkpoint(ck: Checkpoint, receipt: ReceiptFor | None = None) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **ck.arrays)  # uncompressed: a Jetson's CPU is better spent training
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    head: dict[str, Any] = {"step": ck.step, "meta": ck.meta, "sha256": digest, "payload_len": len(payload)}
    if receipt is not None:
        head["receipt"] = receipt(digest)
    header = json.dumps(head, sort_keys=True).encode()
    body = MAGIC + _HEADER_LEN.pack(len(header)) + header + payload
    return body + hashlib.sha256(body).digest()


def checkpoint_header(raw: bytes, source: str = "checkpoint") -> tuple[dict[str, Any], bytes]:
    """(header, payload) of a checkpoint whose digests hold, its arrays not unpacked (what the ground reads of
    one to show its receipt); :class:`CorruptFile` otherwise."""
    if raw[:8] == MAGIC:
        body, stored = raw[:-_DIGEST_LEN], raw[-_DIGEST_LEN:]
        if len(raw) < 8 + _HEADER_LEN.size + _DIGEST_LEN or hashlib.sha256(body).digest() != stored:
            raise CorruptFile(f"{source}: SHA-256 mismatch (header and payload)")
        raw = body
    elif raw[:8] == MAGIC_V1:
        raise CorruptFile(f"{source}: a checkpoint of the first layout, whose header no digest covers: refused")
    else:
        raise CorruptFile(f"{source}: not a Sunlit checkpoint (magic {raw[:8]!r})")
    try:
        (n,) = _HEADER_LEN.unpack_from(raw, 8)
        header = json.loads(raw[12 : 12 + n])
        if not isinstance(header, dict):
            raise CorruptFile(f"{source}: the header is {type(header).__name__}, not an object")
        payload = raw[12 + n :]
        if len(payload) != header["payload_len"]:
            raise CorruptFile(f"{source}: payload is {len(payload)} bytes, header says {header['payload_len']}")
        digest = hashlib.sha256(payload).hexdigest()
        if digest != header["sha256"]:
            raise CorruptFile(f"{source}: SHA-256 mismatch (stored {header['sha256'][:12]}…, computed {digest[:12]}…)")
        return header, payload
    except CorruptFile:
        raise
    except Exception as exc:  # noqa: BLE001 - as below: a crafted header with good digests
        raise CorruptFile(f"{source}: unreadable ({type(exc).__name__}: {exc})") from None


def decode_checkpoint(raw: bytes, source: str = "checkpoint") -> Checkpoint:
    header, payload = checkpoint_header(raw, source)
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {k: npz[k].copy() for k in npz.files}
        return Checkpoint(int(header["step"]), arrays, dict(header.get("meta") or {}), header.get("receipt"),
                          header["sha256"])
    except Exception as exc:  # noqa: BLE001 - whatever a crafted file with good digests makes numpy, zipfile or
        # json raise (1e999 in JSON, a payload not an .npz, a bad deflate, a nested header, a huge shape: found
        # in review, each escaped) is a file not to resume from
        raise CorruptFile(f"{source}: unreadable ({type(exc).__name__}: {exc})") from None


def save_checkpoint(path: Path | str, ck: Checkpoint, receipt: ReceiptFor | None = None) -> None:
    write_atomic(path, encode_checkpoint(ck, receipt))


def load_checkpoint(path: Path | str) -> Checkpoint:
    path = Path(path)
    return decode_checkpoint(path.read_bytes(), str(path))
