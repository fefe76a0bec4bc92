"""The ground's side of model uplink: operator keys, signed packages (whole or delta), and the checks
an operator runs before uplinking one.

A package is what :mod:`flight.compute.package` describes: the model (``NAME.onnx``) or its delta
(``NAME.delta.npz``), the reference set (``NAME.ref.npz``: inputs and the outputs onnxruntime
gives here) and the manifest signed with the operator's key (``NAME.manifest.json``). Uplink the
three files to the compute directory's ``staging/``, then send the ``MODEL_INSTALL`` line
:attr:`Package.command` gives.

An operator key file is JSON (``sunlit-operator-key/1``: the operator's name and the Ed25519
private key, hex), written with mode 0600 and refused when others can read it, as ssh does.
``sunlit-ground model`` (ground/model_cli.py) is the command line over these functions.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from flight.compute.package import (
    DEFAULT_TOLERANCE,
    Delta,
    Manifest,
    PackageError,
    ReferenceSet,
    StagedFiles,
    apply_delta,
    array_digest,
    compare_outputs,
    expected_outputs,
    make_delta,
    public_hex,
    refuse_external_data,
    run_outputs,
    sha256_hex,
    shipped_reference_inputs,
    utc_now,
    valid_operator,
)
from flight.compute.store import InvalidModel, check_same_use, describe_model
from flight.compute.usecase.shipped import MODEL_FILE, MODEL_NAME, MODELS_DIR
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import ArgumentError
from flight.storage import fsync_path, write_atomic

KEY_FORMAT = "sunlit-operator-key/1"
MAX_KEY_FILE_BYTES = 4096  # a key file is about 150 bytes


class OperatorKeyError(PackageError):
    """An operator key file that cannot be used; the message names the file and what to do."""


class KeyWriteError(OperatorKeyError):
    """A key file the file system would not take (a full disk, a folder this user cannot write in, a read-only
    file system), nothing of it left under its name: the command failed, its input was good (exit 1, not 2)."""


# --- operator keys -------------------------------------------------------------------------------


def generate_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def key_from_seed(seed: bytes) -> Any:
    """A key from its 32 private bytes (tests and benches use fixed ones; never an operator)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(seed)


def public_line(operator: str, key: Any) -> str:
    """The line for the agent's trusted-keys file: ``operator-name hex-public-key``."""
    return f"{operator} {public_hex(key)}"


def write_key_file(path: Path | str, operator: str, key: Any, overwrite: bool = False) -> None:
    """Write ``key`` for ``operator`` to ``path``, mode 0600 from the start (never readable by others), whole or not
    at all: written beside it, then linked in, never over a key (found in audit: a full disk left a cut-off key
    under its name, which the next keygen would not replace)."""
    from ground.cli_args import install_output

    from cryptography.hazmat.primitives import serialization

    if not valid_operator(operator):
        raise OperatorKeyError(f"operator name {operator!r}: use letters, digits and _ . @ + - (max 64)")
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    body = json.dumps({"format": KEY_FORMAT, "operator": operator, "ed25519_private": raw.hex()}) + "\n"
    path = Path(path)
    if path.is_dir():
        raise OperatorKeyError(f"{path} is a folder; give --out the key file's name")
    exists = OperatorKeyError(f"{path} exists already; give another --out, or --force to replace that key")
    if os.path.lexists(path) and not overwrite:
        raise exists
    if path.exists() and not path.is_file():  # --force over /dev/full as root replaced the device (an audit)
        raise OperatorKeyError(f"{path} is not a file; give --out the key file's name")
    if not path.parent.is_dir():
        raise OperatorKeyError(f"{path}: no folder {path.parent} to write it in")
    tmp = None
    try:  # the temporary file's own name in an OSError is not the one asked for: said with --out's
        if overwrite:  # the old key stays whole until the new one is (mkstemp: mode 600 from the start)
            write_atomic(path, body.encode())
            return
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 600
        with os.fdopen(fd, "w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        install_output(tmp, path)  # a link: a key made meanwhile stays
    except FileExistsError:
        raise exists from None
    except OSError as exc:
        raise KeyWriteError(f"{path}: the key cannot be written ({exc.strerror or exc}); nothing written"
                            + (" (the key there is as it was)" if overwrite else "")) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def read_key_file(path: Path | str) -> tuple[str, Any]:
    """(operator, private key) from a key file; refused when others may read it or it is malformed, and unread when
    it is no regular file or larger than a key file is (found in audit: --key /dev/zero read until the memory ran
    out, said as "cannot use that model: MemoryError", and a FIFO was waited on for ever)."""
    from flight.storage import ReadRefused, read_limited

    path = Path(path)
    try:
        data, st = read_limited(path, MAX_KEY_FILE_BYTES)
        mode = stat.S_IMODE(st.st_mode)
        text = data.decode()
    except ReadRefused as exc:
        raise OperatorKeyError(f"{path}: cannot read the key file: {exc}") from None
    except OSError as exc:
        raise OperatorKeyError(f"{path}: cannot read the key file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise OperatorKeyError(f"{path}: not a {KEY_FORMAT} key file (not text)") from None
    if mode & 0o077:
        raise OperatorKeyError(f"{path}: mode {mode:o} lets others read the private key; chmod 600 it")
    try:
        body = json.loads(text)
        if body.get("format") != KEY_FORMAT:
            raise ValueError(f"format {body.get('format')!r}")
        return str(body["operator"]), key_from_seed(bytes.fromhex(body["ed25519_private"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise OperatorKeyError(f"{path}: not a {KEY_FORMAT} key file ({exc})") from None


# --- packages --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """A package written to ``directory``: its manifest, and the bytes of each of its files."""

    directory: Path
    manifest: Manifest
    files: dict[str, int]

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())

    @property
    def command(self) -> str:
        m = self.manifest
        return f"MODEL_INSTALL name={m.name} version={m.version} sha256={m.sha256}"


def load_inputs(path: Path | str | None) -> np.ndarray:
    """Reference inputs: an ``.npy``, or the ``x`` of an ``.npz``; None: the shipped model's (its first
    held-out tiles, which the board keeps with the shipped model)."""
    if path is None:
        return shipped_reference_inputs()
    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO was waited on for ever, a device read on (found in audit)
        raise PackageError(f"{path}: no reference inputs (not a regular file); give an .npy or an .npz with x")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as data:
            return data["x"]
    # a cut-off or damaged .npz too (found in audit: "cannot use that model: BadZipFile", not naming the file)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise PackageError(f"{path}: no reference inputs ({type(exc).__name__}: {exc}); give an .npy or an .npz "
                           "with x") from None


class PackageWriteError(PackageError):
    """A package the file system would not take (a full disk, a folder this user cannot write in): the command
    failed, its input was good (exit 1, not 2)."""


def _write(directory: Path, files: Mapping[str, bytes]) -> dict[str, int]:
    """Every file of the package written beside its name and synced first, then each renamed into place, the
    manifest last: a write the file system refuses leaves the package that was there as it was, and no part of this
    one (found in audit: exit 2, the code for bad input, and the files written before the refusal left beside the
    earlier package's manifest)."""
    if directory.exists() and not directory.is_dir():
        raise PackageError(f"--out {directory} is not a folder; give --out the folder to write the package in")
    for name in files:  # a rename onto a folder fails: after the earlier files were replaced, part-way
        there = directory / name
        if there.is_dir() and not there.is_symlink():
            raise PackageError(f"--out {there} is a folder: move it, or give --out another folder")
    temps: dict[str, str] = {}
    placed = 0
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            fd, temps[name] = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for name, tmp in temps.items():
            os.replace(tmp, directory / name)
            placed += 1
        fsync_path(directory)
    except OSError as exc:
        left = "nothing written" if not placed else f"{', '.join(list(files)[:placed])} written, the rest not"
        raise PackageWriteError(f"{directory}: the package cannot be written ({exc.strerror or exc}); {left}") \
            from None
    finally:
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)
    return {name: len(data) for name, data in files.items()}


def _installable(name: str, version: str) -> None:
    """A name and version MODEL_INSTALL can carry (the dictionary's limits, tighter than a manifest's): a
    package signed with a longer version once had to be packed again (an audit)."""
    try:
        DICTIONARY.command("MODEL_INSTALL").validate_args({"name": name, "version": version, "sha256": "0" * 64})
    except ArgumentError as exc:
        raise PackageError(f"MODEL_INSTALL could not name this package: {exc}") from None


def _reference_outputs(model: bytes, inputs: np.ndarray, tolerance: float) -> dict[str, np.ndarray]:
    """The outputs to sign over ``inputs``, refused before anything is written where the inputs do not fit the model
    or give a reference that vouches for nothing (found in audit: onnxruntime's "Invalid rank for input: x Got: 4
    Expected: 2", not saying the inputs were the shipped model's by default; and inputs with no samples, or all NaN,
    packed, exit 0, a package verify and the board refuse)."""
    import onnxruntime as ort

    from flight.compute.providers import ort_message

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    try:
        outputs = run_outputs(session, inputs, [o.name for o in session.get_outputs()])
    except Exception as exc:  # noqa: BLE001 - onnxruntime refuses inputs of another rank, type or size its own way
        given = (f"the reference inputs ({inputs.dtype} {list(inputs.shape)}; without --inputs the shipped model's "
                 "held-out tiles)")
        if type(exc).__name__ == "InvalidArgument":  # its word for inputs that do not fit (the rest: the model's run)
            raise PackageError(f"--inputs: {given} do not fit the model's input {first.name} {first.type} "
                               f"{list(first.shape)}: {ort_message(exc)[:200]}; give --inputs an .npy, or an .npz "
                               "with x, of the model's own inputs") from None
        raise PackageError(f"the model failed on {given}: {ort_message(exc)[:200]}") from None
    check = compare_outputs(outputs, outputs, tolerance)
    if not check.ok:
        raise PackageError(f"--inputs: {check.describe()}; give reference inputs on which the model gives numbers "
                           "(the board and verify refuse this one)")
    return outputs


def _reference_fits(reference: bytes) -> bytes:
    """``reference`` (a reference set's file) if the board takes one its size, else refused before anything is
    written (found in audit: 20 million reference inputs packed into a 282 MB NAME.ref.npz, exit 0, which the board
    refuses unread, past MAX_REFERENCE_BYTES)."""
    from flight.compute.uplink import MAX_REFERENCE_BYTES

    if len(reference) > MAX_REFERENCE_BYTES:
        raise PackageError(f"--inputs: the reference set is {len(reference)} bytes, over the board's limit of "
                           f"{MAX_REFERENCE_BYTES} (MAX_REFERENCE_BYTES); give fewer reference inputs")
    return reference


def same_use_as_shipped(name: str, version: str, model: bytes) -> None:
    """A version of the shipped model takes and gives what it does (the board's rule, MDL-004): refused here, before
    anything is written (found in review: packed, exit 0, and refused only by verify or the board). The ground
    knows no other model's active version."""
    if name != MODEL_NAME:
        return
    try:
        check_same_use(name, version, describe_model(model), "the shipped model",
                       describe_model((MODELS_DIR / MODEL_FILE).read_bytes()))
    except InvalidModel as exc:
        raise PackageError(str(exc)) from None


def pack_full(model: bytes, name: str, version: str, operator: str, key: Any, out_dir: Path | str,
              inputs: np.ndarray, tolerance: float = DEFAULT_TOLERANCE, created_utc: str | None = None) -> Package:
    """Sign ``model`` whole, with its reference set over ``inputs``; write the package to ``out_dir``."""
    _installable(name, version)
    refuse_external_data(model, "model")  # before onnxruntime: the board refuses it too (MDL-002)
    same_use_as_shipped(name, version, model)
    inputs = np.ascontiguousarray(inputs)
    reference = _reference_fits(ReferenceSet(inputs, _reference_outputs(model, inputs, tolerance)).to_bytes())
    manifest = Manifest(name, version, "full", sha256_hex(model), len(model), operator, created_utc or utc_now(),
                        sha256_hex(reference), array_digest(inputs), float(tolerance)).sign(key)
    staged = StagedFiles.of(name)
    sizes = _write(Path(out_dir), {staged.model: model, staged.reference: reference,
                                   staged.manifest: manifest.to_bytes()})
    return Package(Path(out_dir), manifest, sizes)


def pack_delta(base: bytes, tuned: bytes, name: str, version: str, operator: str, key: Any, out_dir: Path | str,
               inputs: np.ndarray, tolerance: float = DEFAULT_TOLERANCE, with_inputs: bool = False,
               created_utc: str | None = None) -> Package:
    """Sign the delta from ``base`` to ``tuned``; write the package to ``out_dir``.

    The reference outputs are those of the model the board will build (the base with the delta
    applied, by the same code), over ``inputs``; without ``with_inputs`` the inputs are left out
    and the board takes the base version's, so ``inputs`` must be the ones the base was sent
    (or, for the shipped model, the default).
    """
    _installable(name, version)
    refuse_external_data(base, "base model")  # before onnx reads the tensors: the board refuses it too (MDL-002)
    refuse_external_data(tuned, "fine-tuned model")
    delta, result = make_delta(base, tuned)
    same_use_as_shipped(name, version, result)
    inputs = np.ascontiguousarray(inputs)
    outputs = _reference_outputs(result, inputs, tolerance)
    reference = _reference_fits(ReferenceSet(inputs if with_inputs else None, outputs).to_bytes())
    delta_bytes = delta.to_bytes()
    manifest = Manifest(name, version, "delta", delta.result_sha256, len(result), operator,
                        created_utc or utc_now(), sha256_hex(reference), array_digest(inputs), float(tolerance),
                        base_sha256=delta.base_sha256, delta_sha256=sha256_hex(delta_bytes)).sign(key)
    staged = StagedFiles.of(name)
    sizes = _write(Path(out_dir), {staged.delta: delta_bytes, staged.reference: reference,
                                   staged.manifest: manifest.to_bytes()})
    return Package(Path(out_dir), manifest, sizes)


def verify_package(directory: Path | str, name: str, trusted: Mapping[str, bytes], base: bytes | None = None,
                   inputs: np.ndarray | None = None) -> list[str]:
    """The board's checks, on the ground, before uplink; the lines say what passed.

    Signature, each file's SHA-256, the delta applied to ``base`` (needed for a delta), for a version
    of the shipped model its inputs and result (the board refuses others), and the reference outputs
    run again here (CPU). ``inputs``: a delta's reference inputs when its
    reference set leaves them out (default: the shipped model's). Raises :class:`PackageError`
    at the first check that fails.
    """
    from flight.compute.uplink import (
        MAX_MANIFEST_BYTES,
        MAX_MODEL_BYTES,
        MAX_REFERENCE_BYTES,
    )
    from flight.storage import ReadRefused, read_limited

    directory, staged = Path(directory), StagedFiles.of(name)

    def read(file_name: str, limit_bytes: int, expected_bytes: int | None = None) -> bytes:
        """As the board reads a staged file (flight/compute/uplink.py): its limit, a full model's signed size, no
        FIFO waited on (found in audit: verify said OK to a model of another size than signed, which the board
        refuses unread)."""
        try:
            return read_limited(directory / file_name, limit_bytes, expected_bytes)[0]
        except ReadRefused as exc:
            said = " (the signed manifest's size_bytes)" if exc.kind == "size" else ""
            raise PackageError(f"{directory / file_name}: {exc}{said}") from None
        except OSError as exc:
            raise PackageError(f"{directory / file_name}: {exc.strerror}") from None

    manifest = Manifest.from_bytes(read(staged.manifest, MAX_MANIFEST_BYTES))
    manifest.verify(trusted)
    if manifest.name != name:  # the board compares the command's name with the signed one (an audit: said OK here)
        raise PackageError(f"name: the package is {manifest.name!r} (its signed manifest), not {name!r}; "
                           "MODEL_INSTALL names it as signed")
    # A manifest takes a longer version than MODEL_INSTALL carries (one packed by another tool or an older ground):
    # no command could install it (found in audit: verify said OK).
    _installable(manifest.name, manifest.version)
    if manifest.size_bytes > MAX_MODEL_BYTES:
        raise PackageError(f"size_bytes: the model is {manifest.size_bytes} bytes, over the board's limit of "
                           f"{MAX_MODEL_BYTES} bytes (MAX_MODEL_BYTES)")
    lines = [f"signature: good, by {manifest.uplinked_by} ({manifest.kind} package of {manifest.name} "
             f"version {manifest.version}, made {manifest.created_utc})"]
    ref_bytes = read(staged.reference, MAX_REFERENCE_BYTES)
    if sha256_hex(ref_bytes) != manifest.reference_sha256:
        raise PackageError(f"{staged.reference}: SHA-256 is not the signed one")
    if manifest.kind == "full":
        model = read(staged.model, MAX_MODEL_BYTES, manifest.size_bytes)
        if sha256_hex(model) != manifest.sha256:
            raise PackageError(f"{staged.model}: SHA-256 is not the signed one")
        refuse_external_data(model, staged.model)
    else:
        delta_bytes = read(staged.delta, MAX_MODEL_BYTES)
        if sha256_hex(delta_bytes) != manifest.delta_sha256:
            raise PackageError(f"{staged.delta}: SHA-256 is not the signed one")
        if base is None:
            raise PackageError("a delta package: give its base model (--base) to build and check the result")
        refuse_external_data(base, "base model")
        delta = Delta.from_bytes(delta_bytes)
        if (delta.base_sha256, delta.result_sha256) != (manifest.base_sha256, manifest.sha256):  # as the board
            raise PackageError(f"{staged.delta}: it names another base or result than its signed manifest")
        model = apply_delta(base, delta)
        if sha256_hex(model) != manifest.sha256:
            raise PackageError("the model built from the delta is not the signed one")
        lines.append(f"delta: {len(delta.tensors)} tensors ({', '.join(sorted(delta.tensors))}) on base "
                     f"{manifest.base_sha256[:16]}…")
    lines.append(f"sha256: {manifest.sha256} ({manifest.size_bytes} B)")
    if manifest.name == MODEL_NAME:
        same_use_as_shipped(name, manifest.version, model)
        lines.append("inputs and result: those of the shipped model, whose jobs use them")
    reference = ReferenceSet.from_bytes(ref_bytes)
    x = reference.x if reference.x is not None else (inputs if inputs is not None else shipped_reference_inputs())
    if array_digest(x) != manifest.reference_inputs_sha256:
        raise PackageError("the reference inputs are not the signed ones (a delta: give the base's with --inputs)")
    check = compare_outputs(expected_outputs(model, x), reference.outputs, manifest.tolerance)
    if not check.ok:
        raise PackageError(f"reference check here: {check.describe()}")
    lines.append(f"reference: {len(x)} inputs, {check.describe()}")
    return lines
