"""Signed model packages: what the ground uplinks for ``MODEL_INSTALL``, and the checks the board makes.

A package for model NAME is three files that the file uplink leaves in the compute
directory's ``staging/``:

    NAME.onnx  or  NAME.delta.npz   the model whole, or only the initializers that changed
    NAME.ref.npz                    the reference set: inputs ``x`` and the outputs the ground
                                    expects (``y.<output name>``), computed with onnxruntime
    NAME.manifest.json              what the other two are, signed by an operator (Ed25519)

The manifest names the model (name, version, the SHA-256 and size of the ONNX bytes that
will run), who uplinked it (``uplinked_by``, the operator whose key signed it), when it was
made, the reference set's SHA-256, the SHA-256 of its inputs and the tolerance of the
comparison, and for a delta the delta file's SHA-256 and the base model's. The signature
covers :data:`SIGN_DOMAIN` followed by the body as canonical JSON (sorted keys, no spaces,
ASCII), so it can be checked from the file alone and never means anything else.

Order of the checks on board (the worker does them, this module says how): the manifest's
signature by a trusted key, then each file's SHA-256 against the manifest, and only then
are the files parsed. A file that fails its hash is never opened as NumPy or ONNX.

A delta (:class:`Delta`) is the changed initializers by name. The board loads the base (the
active or fallback version of the model, checked by its SHA-256), replaces them, and
serialises the model with :func:`apply_delta`; the ground builds the expected result with the
same function (:func:`make_delta`), so the SHA-256 the operator signs is the SHA-256 of the
bytes the board will make. A delta's reference set may leave out ``x``: the inputs are then
those of the base version's reference set, which the store keeps with each version, checked
by ``reference_inputs_sha256``. That is what keeps a delta a few per cent of a full package,
whose inputs usually outweigh the model.

Everything here is pure (bytes in, bytes or values out) except :func:`load_trusted_keys`,
which reads the file or directory the agent's configuration names.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import time
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from flight.storage import ReadRefused, read_limited

MANIFEST_FORMAT = "sunlit-model-package/1"
SIGN_DOMAIN = b"sunlit-model-package/1\n"  # signed before the body: a signature means this and nothing else
DEFAULT_TOLERANCE = 1e-3  # max |output - expected|: probabilities on another provider (CUDA, TensorRT fp16)
REFERENCE_TILES = 16  # the shipped model's reference inputs: the first held-out tiles
KINDS = ("full", "delta")

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")  # as flight.compute.store: names become files
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # what MODEL_INSTALL takes (flight.agent.compute)
_OPERATOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_KEY_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_SIG_HEX = re.compile(r"^[0-9a-f]{128}$")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same arrays give the same bytes
NPZ_PART_BYTES = 1024 * 1024  # deflated between two keep-alives (npz_bytes): 0.03 s of a busy CPU here

# Ed25519 public keys of small order: the eight points of the curve's 8-torsion, the two of them with x = 0 also with
# the sign bit set, and y = p and p + 1 (0 and 1 not reduced) with either sign bit. Against such a key a signature can
# be forged for any manifest (found in audit: under the identity key, R = the identity and S = 0 verified for every
# message). Hand-written, as libsodium's blocklist is: cryptography loads these keys and verifies such forgeries.
SMALL_ORDER_KEYS = frozenset(bytes.fromhex(h) for h in (
    "0100000000000000000000000000000000000000000000000000000000000000",  # the identity (order 1)
    "0100000000000000000000000000000000000000000000000000000000000080",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p - 1 (order 2)
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "0000000000000000000000000000000000000000000000000000000000000000",  # y = 0 (order 4)
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p, read as 0 (order 4)
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 1, read as 1 (order 1)
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
))


class PackageError(ValueError):
    """A package (or one of its files) is refused; the message says which check failed and why."""


class SignatureError(PackageError):
    """The manifest's signature is missing, by a key not trusted here, or does not verify."""


class KeyFileError(PackageError):
    """The trusted-keys file or directory cannot be read, or a line of it is malformed (named)."""


class DeltaError(PackageError):
    """A delta does not fit its base: wrong base, unknown tensor, other shape or dtype (named)."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def valid_operator(name: str) -> bool:
    """An operator name: letters, digits and _ . @ + -, at most 64 (it is a key's name and goes in telemetry)."""
    return bool(_OPERATOR.match(name))


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- keys ------------------------------------------------------------------------------------------


_P = 2**255 - 19
_D = -121665 * pow(121666, -1, _P) % _P


def on_curve(key: bytes) -> bool:
    """Whether 32 bytes decode to a point of the Ed25519 curve (RFC 8032 section 5.1.3). About half of all
    32-byte strings do not; cryptography loads them all (from_public_bytes checks the length only), and every
    signature then fails against such a key, so an operator learnt of a mistyped key only at the first install
    (found in review). Hand-written for that reason: a square root modulo p, a dozen lines of the RFC's."""
    if len(key) != 32:
        return False
    y = int.from_bytes(key, "little") & ((1 << 255) - 1)
    if y >= _P:
        return False
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if (v * x * x - u) % _P != 0:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
        if (v * x * x - u) % _P != 0:
            return False  # u / v has no square root: no x for this y
    return not (x == 0 and key[31] >> 7)  # x = 0 has no negative: its sign bit set is no encoding


def parse_trusted_keys(text: str, source: str) -> dict[str, bytes]:
    """``operator-name hex-public-key`` lines (``#`` comments, blank lines) -> name: 32 raw bytes."""
    keys: dict[str, bytes] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"{source}:{lineno}"
        if len(parts) != 2:
            raise KeyFileError(f"{where}: expected 'operator-name hex-public-key', got {line[:60]!r}")
        name, hex_key = parts
        if not _OPERATOR.match(name):
            raise KeyFileError(f"{where}: operator name {name[:40]!r}: use letters, digits and _ . @ + - (max 64)")
        if not _KEY_HEX.match(hex_key):
            raise KeyFileError(f"{where}: the key of {name!r} is not 64 hex digits (an Ed25519 public key)")
        if name in keys:
            raise KeyFileError(f"{where}: operator {name!r} is listed twice")
        key = bytes.fromhex(hex_key)
        if key in SMALL_ORDER_KEYS:
            raise KeyFileError(f"{where}: the key of {name!r} is a point of small order, against which anyone can "
                               "forge a signature, and no operator's key: use the line `sunlit-ground model keygen` "
                               "printed for them")
        if not on_curve(key):
            raise KeyFileError(f"{where}: the key of {name!r} is no Ed25519 public key (its bytes are no point of "
                               "the curve: a digit mistyped or lost?), so no signature could ever verify against "
                               "it: use the line `sunlit-ground model keygen` printed for them")
        keys[name] = key
    return keys


# One operator's line is under 200 characters; a file of many thousands still fits.
TRUSTED_KEYS_LIMIT_BYTES = 4 << 20


def load_trusted_keys(path: Path | str) -> dict[str, bytes]:
    """The operators' public keys from a file of lines, or from every ``*.pub`` file of a directory.

    Raises :class:`KeyFileError` naming the file (and line) when one cannot be read or parsed,
    when an operator is listed twice, when a key is of small order (:data:`SMALL_ORDER_KEYS`) or no
    point of the curve at all (:func:`on_curve`), or
    when there is no key at all: a configured key file that trusts nobody is a mistake, not a policy.
    """
    path = Path(path)
    try:
        files = sorted(p for p in path.iterdir() if p.suffix == ".pub" and p.is_file()) if path.is_dir() else [path]
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot list it: {exc.strerror}") from None
    keys: dict[str, bytes] = {}
    for f in files:
        try:
            # Bounded and never waited on: a FIFO named as the key file is refused, not blocked on.
            text = read_limited(f, TRUSTED_KEYS_LIMIT_BYTES)[0].decode()
        except FileNotFoundError:
            raise KeyFileError(f"{f}: no such trusted-keys file") from None
        except ReadRefused as exc:
            raise KeyFileError(f"{f}: cannot read it: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"{f}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
        for name, key in parse_trusted_keys(text, str(f)).items():
            if name in keys:
                raise KeyFileError(f"{f}: operator {name!r} is listed in another key file too")
            keys[name] = key
    if not keys:
        where = f"{path}: no *.pub files with keys" if path.is_dir() else f"{path}: no keys in it"
        raise KeyFileError(f"{where}; add a line 'operator-name hex-public-key' (sunlit-ground model keygen prints it)")
    return keys


def public_hex(private_key: Any) -> str:
    """The raw Ed25519 public key of ``private_key`` (cryptography's Ed25519PrivateKey), hex."""
    from cryptography.hazmat.primitives import serialization

    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


# --- the manifest ----------------------------------------------------------------------------------


def _finite(value: int | float) -> bool:
    """Whether ``value`` is a finite float: JSON's integers have no bound, and past a float's range
    ``math.isfinite`` raises (OverflowError) rather than say no."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


@dataclass(frozen=True)
class Manifest:
    """What a package is and who vouches for it; validated here, the one place manifests are built."""

    name: str
    version: str
    kind: str  # "full" (NAME.onnx) or "delta" (NAME.delta.npz)
    sha256: str  # of the ONNX bytes that will run: the file, or the delta applied to its base
    size_bytes: int
    uplinked_by: str  # the operator; their key signs the manifest
    created_utc: str
    reference_sha256: str  # of NAME.ref.npz
    reference_inputs_sha256: str  # of its x (array_digest), or of the base's stored inputs when x is left out
    tolerance: float  # max |output - expected| over every reference output
    base_sha256: str = ""  # delta: the model it applies to (the active or the fallback version)
    delta_sha256: str = ""  # delta: of NAME.delta.npz
    signature: str = ""  # Ed25519 over SIGN_DOMAIN + canonical body, hex; "" until signed

    def __post_init__(self) -> None:
        if not _MODEL_NAME.fullmatch(self.name) or not _SAFE.fullmatch(self.version):
            raise PackageError(f"manifest: name {self.name!r} (letters, digits, _ -) / version {self.version!r} "
                               "(letters, digits, _ . + -)")
        if self.kind not in KINDS:
            raise PackageError(f"manifest: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        for key in ("sha256", "reference_sha256", "reference_inputs_sha256"):
            if not _SHA256_HEX.match(getattr(self, key)):
                raise PackageError(f"manifest: {key} {getattr(self, key)[:70]!r} is not 64 lower-case hex digits")
        for key in ("base_sha256", "delta_sha256"):
            value = getattr(self, key)
            if (self.kind == "delta") != bool(value) or (value and not _SHA256_HEX.match(value)):
                raise PackageError(f"manifest: {key} {value[:70]!r}: 64 hex digits for a delta, empty for a full model")
        if isinstance(self.size_bytes, bool) or not isinstance(self.size_bytes, int) or self.size_bytes <= 0:
            raise PackageError(f"manifest: size_bytes {str(self.size_bytes)[:40]!r} must be a whole number > 0")
        if not _OPERATOR.match(self.uplinked_by):
            raise PackageError(f"manifest: uplinked_by {self.uplinked_by[:70]!r} is not an operator name")
        if (isinstance(self.tolerance, bool) or not isinstance(self.tolerance, (int, float))
                or not _finite(self.tolerance) or self.tolerance < 0):
            raise PackageError(f"manifest: tolerance {str(self.tolerance)[:40]!r} must be a finite number >= 0")
        if not isinstance(self.created_utc, str) or len(self.created_utc) > 40:
            raise PackageError(f"manifest: created_utc {self.created_utc!r}")
        if self.signature and not _SIG_HEX.match(self.signature):
            raise PackageError("manifest: signature is not 128 lower-case hex digits")

    def body(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "kind": self.kind, "sha256": self.sha256,
            "size_bytes": self.size_bytes, "uplinked_by": self.uplinked_by, "created_utc": self.created_utc,
            "reference_sha256": self.reference_sha256, "reference_inputs_sha256": self.reference_inputs_sha256,
            "tolerance": float(self.tolerance), "base_sha256": self.base_sha256, "delta_sha256": self.delta_sha256,
        }

    def signed_bytes(self) -> bytes:
        return SIGN_DOMAIN + json.dumps(self.body(), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def sign(self, private_key: Any) -> Manifest:
        """This manifest signed with ``private_key`` (cryptography's Ed25519PrivateKey)."""
        return replace(self, signature=private_key.sign(self.signed_bytes()).hex())

    def verify(self, trusted: Mapping[str, bytes]) -> None:
        """Raise :class:`SignatureError` unless ``uplinked_by``'s trusted key signed exactly this body."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        if not self.signature:
            raise SignatureError("the manifest is not signed")
        key = trusted.get(self.uplinked_by)
        if key is None:
            raise SignatureError(
                f"signed by {self.uplinked_by!r}, whose key is not trusted here (trusted: "
                f"{', '.join(sorted(trusted)) or 'none'}); add the operator's public line to [models] trusted_keys")
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(bytes.fromhex(self.signature), self.signed_bytes())
        except InvalidSignature:
            raise SignatureError(
                f"the signature of {self.uplinked_by!r} does not verify: the manifest was changed after it was "
                "signed, or signed with another key") from None

    def to_bytes(self) -> bytes:
        return (json.dumps({"format": MANIFEST_FORMAT, "body": self.body(), "signature": self.signature},
                           indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse a manifest file; :class:`PackageError` naming what is wrong (it says nothing of trust)."""
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise PackageError(f"manifest: not JSON ({type(exc).__name__})") from None
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise PackageError(f"manifest: format {str(got)[:40]!r}, expected {MANIFEST_FORMAT!r}")
        body = doc.get("body")
        if not isinstance(body, dict):
            raise PackageError("manifest: no body")
        known = {f for f in cls.__dataclass_fields__ if f != "signature"}
        unknown = sorted(set(body) - known)
        missing = sorted(k for k in known - set(body) if k not in ("base_sha256", "delta_sha256"))
        if unknown or missing:
            raise PackageError(f"manifest: unknown fields {unknown}, missing fields {missing}")
        signature = doc.get("signature", "")
        if not isinstance(signature, str):
            raise PackageError("manifest: signature must be a string")
        for key, value in body.items():
            if key not in ("size_bytes", "tolerance") and not isinstance(value, str):
                raise PackageError(f"manifest: {key} must be a string, got {type(value).__name__}")
        return cls(**body, signature=signature)


# --- arrays in files -------------------------------------------------------------------------------


def npz_bytes(arrays: Mapping[str, np.ndarray], keepalive: Callable[[], None] | None = None) -> bytes:
    """A ``.npz`` with fixed member times and no pickled objects: the same arrays, the same bytes.

    Compressed :data:`NPZ_PART_BYTES` at a time, ``keepalive`` called after each part: a reference set near
    its limit is seconds of deflate (found in audit: 9.4 s for 216 MiB, answering no ping during a MODEL_INSTALL).
    The parts go through one compressor, as one write would: the bytes are those of a single write."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.require(arrays[key], requirements="C"), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            data = member.getbuffer()
            info.file_size = len(data)  # as writestr sets it: the same zip64 choice, the same header
            with zf.open(info, "w") as out:
                for at in range(0, len(data), NPZ_PART_BYTES):
                    out.write(data[at:at + NPZ_PART_BYTES])
                    if keepalive is not None:
                        keepalive()
    return buf.getvalue()


def load_npz(data: bytes, what: str) -> dict[str, np.ndarray]:
    """Every array of a ``.npz`` (never a pickle); :class:`PackageError` naming ``what`` otherwise."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {key: z[key] for key in z.files}
    except Exception as exc:  # noqa: BLE001 - zipfile, numpy and zlib raise several types
        raise PackageError(f"{what}: not a readable .npz ({type(exc).__name__}: {str(exc)[:80]})") from None


def array_digest(a: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (C order): equal arrays, equal digests, on any host."""
    a = np.require(a, requirements="C")  # 0-d stays 0-d (ascontiguousarray would make it 1-d)
    head = f"{a.dtype.str}|{','.join(str(d) for d in a.shape)}|".encode()
    return hashlib.sha256(head + a.tobytes()).hexdigest()


# --- the reference set -----------------------------------------------------------------------------

OUTPUT_PREFIX = "y."


@dataclass(frozen=True, eq=False)
class ReferenceSet:
    """Inputs (``x``; None when a delta reuses its base's) and the outputs the ground expects, by name."""

    x: np.ndarray | None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)

    def to_bytes(self, keepalive: Callable[[], None] | None = None) -> bytes:
        """The set as a ``.npz`` (:func:`npz_bytes`, ``keepalive`` called between its parts)."""
        arrays = {f"{OUTPUT_PREFIX}{name}": value for name, value in self.outputs.items()}
        if self.x is not None:
            arrays["x"] = self.x
        return npz_bytes(arrays, keepalive)

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceSet:
        arrays = load_npz(data, "reference set")
        outputs = {k[len(OUTPUT_PREFIX):]: v for k, v in arrays.items() if k.startswith(OUTPUT_PREFIX)}
        extra = sorted(set(arrays) - {"x"} - {OUTPUT_PREFIX + k for k in outputs})
        if extra or not outputs:
            raise PackageError(f"reference set: needs x and y.<output> arrays (unknown: {extra}, outputs: "
                               f"{sorted(outputs)})")
        # Numbers only: the comparison reads each as float64 (found in audit: a y.<output> of strings, signed,
        # failed the install with "could not convert string to float", naming neither the file nor the array)
        for key in sorted(arrays):
            if arrays[key].dtype.kind not in "biuf":
                raise PackageError(f"reference set: {key} holds {arrays[key].dtype} values, not numbers")
        return cls(arrays.get("x"), outputs)

    def with_inputs(self, x: np.ndarray) -> ReferenceSet:
        return ReferenceSet(x, dict(self.outputs))


@dataclass(frozen=True)
class ReferenceResult:
    """How a model's outputs compared with the expected ones: the largest absolute error, and what
    else was wrong (a missing output, another shape, non-finite values); ``ok`` within ``tolerance``."""

    max_error: float
    worst_output: str
    problem: str
    tolerance: float

    @property
    def ok(self) -> bool:
        return not self.problem and self.max_error <= self.tolerance

    def describe(self) -> str:
        if self.problem:
            return self.problem
        return (f"max error {self.max_error:.3g} on output {self.worst_output!r} "
                f"{'within' if self.ok else 'over'} the tolerance {self.tolerance:.3g}")


def run_outputs(session: Any, x: np.ndarray, names: list[str], batch: int = 64) -> dict[str, np.ndarray]:
    """``names`` outputs of an onnxruntime session over ``x``, a batch at a time (first input only)."""
    input_name = session.get_inputs()[0].name
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for start in range(0, len(x), max(1, batch)):
        for name, value in zip(names, session.run(names, {input_name: x[start:start + batch]})):
            parts[name].append(np.asarray(value))
    return {n: np.concatenate(v) if v else np.zeros(0) for n, v in parts.items()}


def compare_outputs(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
                    tolerance: float) -> ReferenceResult:
    # A reference that vouches for nothing is no reference (found in audit: one of no samples, or with NaN for every
    # expected value, passed with an error of 0 on the ground and on board, and a wrong model was activated). One
    # output with none (an empty detection list, an all -inf log-probability) is fine where another vouches.
    if not any(np.isfinite(np.asarray(want, np.float64)).any() for want in expected.values()):
        return ReferenceResult(math.inf, next(iter(expected), ""), "the reference has no finite expected value (no "
                               "samples, or every one NaN or infinite): it vouches for nothing", tolerance)
    worst, worst_name = 0.0, ""
    for name, want in expected.items():
        got = actual.get(name)
        if got is None:
            return ReferenceResult(math.inf, name, f"the model has no output {name!r}", tolerance)
        if got.shape != want.shape:
            return ReferenceResult(math.inf, name, f"output {name!r} has shape {list(got.shape)}, the reference "
                                   f"{list(want.shape)}", tolerance)
        got64, want64 = got.astype(np.float64), want.astype(np.float64)
        bad = ~np.isfinite(got64) & np.isfinite(want64)
        if bad.any():
            return ReferenceResult(math.inf, name, f"output {name!r} has {int(bad.sum())} non-finite values where "
                                   "the reference has numbers", tolerance)
        both = np.isfinite(got64) & np.isfinite(want64)
        err = float(np.max(np.abs(got64[both] - want64[both]), initial=0.0))
        if err > worst or not worst_name:
            worst, worst_name = err, name
    return ReferenceResult(worst, worst_name, "", tolerance)


def expected_outputs(model: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of ``model`` over ``x`` on the CPU: what the ground signs as the expected result."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    return run_outputs(session, x, [o.name for o in session.get_outputs()])


def shipped_reference_inputs(n: int = REFERENCE_TILES) -> np.ndarray:
    """The shipped model's reference inputs: its first ``n`` held-out tiles, float32, as the worker
    feeds them. The board keeps them with the shipped model; the ground makes the same array."""
    from flight.compute.usecase.shipped import load_held_out

    return np.ascontiguousarray(load_held_out().tiles[:n].astype(np.float32))


def refuse_external_data(model: bytes, what: str) -> None:
    """:class:`PackageError` naming the tensor and its file where a tensor of ``model`` keeps its data in a file
    beside it (ONNX external data), which no SHA-256 or signature covers; checked before onnxruntime sees the
    model (found in audit: the board refused such a model with onnxruntime's own error, naming neither)."""
    from flight.compute.store import external_data

    outside = external_data(model)
    if outside:
        (tensor, file), more = outside[0], len(outside) - 1
        others = f" (and {more} more tensor{'s' if more > 1 else ''})" if more else ""
        raise PackageError(f"{what}: tensor {tensor!r} keeps its data in the external file {file!r}{others}, which "
                           "no SHA-256 or signature covers; embed the weights in the model (onnx.load reads the file "
                           "in, onnx.save_model then writes one) and pack it again")


# --- deltas ----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Delta:
    """The initializers that changed, by name, for one base model, and the result's expected SHA-256."""

    base_sha256: str
    result_sha256: str
    tensors: dict[str, np.ndarray]

    def to_bytes(self) -> bytes:
        names = sorted(self.tensors)
        arrays = {"base_sha256": np.array(self.base_sha256), "result_sha256": np.array(self.result_sha256),
                  "names": np.array(names, dtype=np.str_)}
        arrays.update({f"t{i:05d}": self.tensors[name] for i, name in enumerate(names)})
        return npz_bytes(arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> Delta:
        arrays = load_npz(data, "delta")
        try:
            names = [str(n) for n in arrays.pop("names").reshape(-1)]
            base, result = (_one_string(arrays.pop(k), k) for k in ("base_sha256", "result_sha256"))
            tensors = {name: arrays.pop(f"t{i:05d}") for i, name in enumerate(names)}
        except KeyError as exc:
            raise PackageError(f"delta: missing array {exc}") from None
        if arrays:
            raise PackageError(f"delta: unexpected arrays {sorted(arrays)[:5]}")
        if not (_SHA256_HEX.match(base) and _SHA256_HEX.match(result)):
            raise PackageError("delta: base_sha256 and result_sha256 must be 64 hex digits")
        return cls(base, result, tensors)


def _one_string(a: np.ndarray, key: str) -> str:
    """The one value of a delta's field ``key`` (found in audit: an empty one raised IndexError out of the parse,
    and the install failed naming neither the file nor the field)."""
    if a.size != 1:
        raise PackageError(f"delta: {key} holds {a.size} values, not one (64 hex digits)")
    return str(a.reshape(-1)[0])


def _tensor_proto(name: str, value: np.ndarray) -> Any:
    """One initializer, always built the same way (raw little-endian bytes), on the ground and on board."""
    from onnx import TensorProto, helper

    if value.dtype.kind not in "biuf":
        raise DeltaError(f"tensor {name!r}: dtype {value.dtype} cannot travel in a delta (numbers and booleans only)")
    tensor = TensorProto()
    tensor.name = name
    tensor.dims.extend(int(d) for d in value.shape)
    tensor.data_type = helper.np_dtype_to_tensor_dtype(value.dtype)
    tensor.raw_data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
    return tensor


def _parse_model(data: bytes, what: str) -> Any:
    import onnx

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise DeltaError(f"{what}: not an ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise DeltaError(f"{what}: not an ONNX model (no graph)")
    return model


def apply_delta(base: bytes, delta: Delta) -> bytes:
    """``base`` with the delta's initializers in place, serialised deterministically.

    Checks the base's SHA-256 is the one the delta was made for, and that every tensor names
    an initializer of the base with the same shape and dtype; :class:`DeltaError` names the
    tensor otherwise. The ground and the board both build the result here.
    """
    from onnx import TensorProto, helper

    actual = sha256_hex(base)
    if actual != delta.base_sha256:
        raise DeltaError(f"the base model is {actual[:16]}…, the delta was made for {delta.base_sha256[:16]}…")
    model = _parse_model(base, "base model")
    inits = {t.name: t for t in model.graph.initializer}
    for name in sorted(delta.tensors):
        value = delta.tensors[name]
        old = inits.get(name)
        if old is None:
            have = ", ".join(sorted(inits)[:12]) + (" …" if len(inits) > 12 else "")
            raise DeltaError(f"tensor {name!r}: no initializer of that name in the base model (it has: {have})")
        if old.data_location == TensorProto.EXTERNAL:
            raise DeltaError(f"tensor {name!r}: the base keeps it in external data, which a delta cannot patch")
        if tuple(old.dims) != value.shape:
            raise DeltaError(f"tensor {name!r}: shape {list(value.shape)} in the delta, {list(old.dims)} in the base")
        want = np.dtype(helper.tensor_dtype_to_np_dtype(old.data_type))
        if value.dtype.newbyteorder("=") != want.newbyteorder("="):
            raise DeltaError(f"tensor {name!r}: dtype {value.dtype} in the delta, {want} in the base")
        old.CopyFrom(_tensor_proto(name, value.astype(want)))
    return model.SerializeToString(deterministic=True)


def _skeleton(model: Any) -> bytes:
    """The model with its initializers' values taken out: what a delta must leave unchanged."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for t in copy.graph.initializer:
        for f in ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data"):
            t.ClearField(f)
    return copy.SerializeToString(deterministic=True)


def make_delta(base: bytes, tuned: bytes) -> tuple[Delta, bytes]:
    """The delta from ``base`` to ``tuned`` and the model the board will build from it (its bytes).

    Refused (:class:`DeltaError`) when ``tuned`` differs from ``base`` in anything but the
    values of initializers of the same name, shape and dtype: send such a model whole.
    """
    from onnx import numpy_helper

    b, t = _parse_model(base, "base model"), _parse_model(tuned, "fine-tuned model")
    b_inits = {i.name: i for i in b.graph.initializer}
    t_inits = {i.name: i for i in t.graph.initializer}
    if set(b_inits) != set(t_inits):
        raise DeltaError(f"initializers differ: only in the base {sorted(set(b_inits) - set(t_inits))[:5]}, only in "
                         f"the fine-tuned model {sorted(set(t_inits) - set(b_inits))[:5]}; send the model whole")
    changed: dict[str, np.ndarray] = {}
    for name in sorted(b_inits):
        old, new = numpy_helper.to_array(b_inits[name]), numpy_helper.to_array(t_inits[name])
        if old.shape != new.shape or old.dtype != new.dtype:
            raise DeltaError(f"tensor {name!r} changes from {old.dtype}{list(old.shape)} to {new.dtype}"
                             f"{list(new.shape)}; send the model whole")
        if old.tobytes() != new.tobytes():
            changed[name] = np.ascontiguousarray(new)
    if _skeleton(b) != _skeleton(t):
        raise DeltaError("the fine-tuned model differs from the base in more than initializer values (graph, "
                         "attributes or metadata); send the model whole")
    if not changed:
        raise DeltaError("the fine-tuned model's initializers are the base's: nothing to send")
    draft = Delta(sha256_hex(base), "0" * 64, changed)
    result = apply_delta(base, draft)
    return replace(draft, result_sha256=sha256_hex(result)), result


# --- staging --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedFiles:
    """The file names of one model's package in staging/."""

    model: str
    delta: str
    reference: str
    manifest: str

    @classmethod
    def of(cls, name: str) -> StagedFiles:
        return cls(f"{name}.onnx", f"{name}.delta.npz", f"{name}.ref.npz", f"{name}.manifest.json")
