"""The checks an uplinked model passes before the worker runs it: what ``MODEL_INSTALL`` verifies.

:class:`UplinkChecks` reads a package from the compute directory's ``staging/`` (the files of
:mod:`flight.compute.package`): the manifest's signature against the operators' keys the agent
trusts, then each file's SHA-256 against the manifest (and the command's name, version and
SHA-256 against it), only then parses them, builds the model from a delta on the store's active
or fallback version, and puts the reference inputs together (a delta's are its base's).
:meth:`UplinkChecks.reference_check` then runs the model over them in a real session. What
fails raises :class:`Refusal`, whose reason the operator reads and whose code the command
fails with. Activation itself is the store's (:meth:`flight.compute.store.ModelStore.activate`),
driven by the worker.

A model with no signed manifest is taken on the command's SHA-256 alone only where the
configuration says so (``[models] allow_unsigned``); a delta is always signed.

Every staged file is read by :func:`flight.storage.read_limited`: its size is looked at on the opened file before
anything is read, against its limit (:data:`MAX_MODEL_BYTES`, :data:`MAX_REFERENCE_BYTES`,
:data:`MAX_MANIFEST_BYTES`) and, for a full model, the signed ``size_bytes``, and never more than
that is read (found in review: a file was read whole before any check, so a huge one cost the board
its memory before it was refused).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flight.compute.package import (
    Delta,
    Manifest,
    PackageError,
    ReferenceResult,
    ReferenceSet,
    StagedFiles,
    apply_delta,
    array_digest,
    compare_outputs,
    load_trusted_keys,
    refuse_external_data,
    run_outputs,
    sha256_hex,
)
from flight.compute.providers import SessionError, open_session, ort_message
from flight.compute.store import ModelIntegrityError, ModelNotFound, ModelStore, Provenance, VersionNotFound
from flight.files.filestore import NameRefused, resolve
from flight.link.dictionary import FailureCode
from flight.storage import ReadRefused, read_limited  # noqa: F401 - also taken from here by the worker's readers


MAX_MODEL_BYTES = 2**31 - 1  # protobuf's limit: no ONNX model that keeps its weights inside it is larger
MAX_REFERENCE_BYTES = 256 * 1024 * 1024  # a reference set (the shipped model's: 16 tiles, 70 kB)
MAX_MANIFEST_BYTES = 64 * 1024  # a signed manifest (about 1 kB)


class Refusal(Exception):
    """Why an uplinked model is not installed, and the failure code for the command."""

    def __init__(self, reason: str, code: FailureCode = FailureCode.BAD_ARGUMENTS):
        super().__init__(reason)
        self.reason, self.code = reason, code


@dataclass(frozen=True)
class Candidate:
    """An uplinked model that passed its hash and signature checks, before its reference check."""

    data: bytes
    provenance: Provenance
    reference: ReferenceSet | None  # None: an unsigned install, no reference check
    tolerance: float = 0.0


class UplinkChecks:
    """The checks of one compute directory's uplinks, against its store and the agent's [models] settings."""

    def __init__(self, store: ModelStore, staging: Path, trusted_keys: Path | None, allow_unsigned: bool):
        """``trusted_keys`` is read at each install, so a key file replaced on board takes effect at once."""
        self.store, self.staging = store, Path(staging)
        self.trusted_keys, self.allow_unsigned = trusted_keys, allow_unsigned

    def candidate(self, name: str, version: str, sha256: str) -> Candidate:
        """The model to install, after every check that needs no session; raises :class:`Refusal`."""
        staging, files = self.staging, StagedFiles.of(name)
        for staged in (files.model, files.delta, files.manifest, files.reference):
            self._confined(staged)
        if not (staging / files.model).is_file() and not (staging / files.delta).is_file():
            raise Refusal(f"no uplinked file staging/{files.model} (nor staging/{files.delta}): uplink the "
                          "model's package first")
        if not (staging / files.manifest).is_file():
            return self._unsigned(sha256, staging, files)
        trusted = self._trusted()
        try:
            manifest = Manifest.from_bytes(_read(staging, files.manifest, MAX_MANIFEST_BYTES,
                                                 "MAX_MANIFEST_BYTES"))
            manifest.verify(trusted)
        except PackageError as exc:
            raise Refusal(f"staging/{files.manifest}: {exc}") from None
        said = (name, version, sha256.lower())
        signed = (manifest.name, manifest.version, manifest.sha256)
        if said != signed:
            raise Refusal(f"the command names {said[0]} version {said[1]} ({said[2][:16]}…), the signed manifest "
                          f"{signed[0]} version {signed[1]} ({signed[2][:16]}…)")
        if manifest.size_bytes > MAX_MODEL_BYTES:
            raise Refusal(f"staging/{files.manifest}: the model is {manifest.size_bytes} bytes, over the limit of "
                          f"{MAX_MODEL_BYTES} bytes (MAX_MODEL_BYTES: protobuf's, for a model with its weights in it)")
        ref_bytes = _read(staging, files.reference, MAX_REFERENCE_BYTES, "MAX_REFERENCE_BYTES")
        _check_sha(f"staging/{files.reference}", ref_bytes, manifest.reference_sha256)
        base_version = ""
        if manifest.kind == "full":
            data = _read(staging, files.model, MAX_MODEL_BYTES, "MAX_MODEL_BYTES", manifest.size_bytes)
            _check_sha(f"staging/{files.model}", data, manifest.sha256)
        else:
            delta_bytes = _read(staging, files.delta, MAX_MODEL_BYTES, "MAX_MODEL_BYTES")
            _check_sha(f"staging/{files.delta}", delta_bytes, manifest.delta_sha256)
            try:
                delta = Delta.from_bytes(delta_bytes)
                if (delta.base_sha256, delta.result_sha256) != (manifest.base_sha256, manifest.sha256):
                    raise PackageError("the delta file names another base or result than its signed manifest")
                base = self.store.load_version(name, manifest.base_sha256)
                data = apply_delta(base.bytes, delta)
            except (PackageError, VersionNotFound, ModelNotFound, ModelIntegrityError) as exc:
                raise Refusal(f"delta: {exc}") from None
            base_version = base.version
            actual = sha256_hex(data)
            if actual != manifest.sha256:
                raise Refusal(f"delta: the model built from it is {actual[:16]}…, not the signed "
                              f"{manifest.sha256[:16]}… (serialised differently on the ground?); send it whole")
        _embedded(f"staging/{files.model}" if manifest.kind == "full" else "delta: the model built from it", data)
        try:
            reference = ReferenceSet.from_bytes(ref_bytes)
            if reference.x is None:
                reference = reference.with_inputs(self._base_inputs(name, base_version))
        except PackageError as exc:
            raise Refusal(f"staging/{files.reference}: {exc}") from None
        if array_digest(reference.x) != manifest.reference_inputs_sha256:
            raise Refusal(f"staging/{files.reference}: its inputs are not the signed ones "
                          f"({array_digest(reference.x)[:16]}…, signed {manifest.reference_inputs_sha256[:16]}…)")
        provenance = Provenance(manifest.uplinked_by, True, manifest.created_utc, time.time())
        return Candidate(data, provenance, reference, manifest.tolerance)

    def _confined(self, staged: str) -> None:
        """A staged file a symbolic link leads out of the compute directory is refused, never read."""
        try:
            resolve(self.staging.parent, f"{self.staging.name}/{staged}", None, "name")
        except NameRefused:
            raise Refusal(f"name: staging/{staged} leads outside the compute directory (a symbolic link); "
                          "uplink the file itself") from None

    def _unsigned(self, sha256: str, staging: Path, files: StagedFiles) -> Candidate:
        if not (staging / files.model).is_file():
            raise Refusal(f"staging/{files.delta} has no signed manifest staging/{files.manifest}: a delta is "
                          "always signed (sunlit-ground model delta)")
        if not self.allow_unsigned:
            raise Refusal(f"no signed manifest staging/{files.manifest}: unsigned models are refused ([models] "
                          "allow_unsigned = false); pack it with `sunlit-ground model pack` and uplink the "
                          "manifest and reference set too")
        data = _read(staging, files.model, MAX_MODEL_BYTES, "MAX_MODEL_BYTES")
        actual = sha256_hex(data)
        if actual != sha256.lower():
            raise Refusal(f"SHA-256 {actual[:16]}… is not the expected {sha256[:16]}…")
        _embedded(f"staging/{files.model}", data)
        return Candidate(data, Provenance("unsigned", False, "", time.time()), None)

    def _trusted(self) -> dict[str, bytes]:
        if self.trusted_keys is None:
            # Within a report's reason (MAX_REASON_LEN: found in review, the hint at its end was cut off), and an
            # execution error: the agent's configuration lacks it, no mode would take it
            raise Refusal("no trusted operator keys: none are configured: set [models] trusted_keys to a file of "
                          "'name hex-key' lines (sunlit-ground model keygen prints one)", FailureCode.EXECUTION_ERROR)
        try:
            return load_trusted_keys(self.trusted_keys)
        except PackageError as exc:
            raise Refusal(f"trusted keys ([models] trusted_keys): {exc}", FailureCode.EXECUTION_ERROR) from None

    def _base_inputs(self, name: str, version: str) -> np.ndarray:
        """The reference inputs kept with a delta's base version (its reference set leaves them out)."""
        if not version:
            raise PackageError("the reference set has no inputs (x)")
        try:
            kept = self.store.load_reference(name, version)
        except ModelIntegrityError as exc:
            raise PackageError(f"the base's reference set failed its check: {exc}") from None
        inputs = ReferenceSet.from_bytes(kept).x if kept is not None else None
        if inputs is None:
            raise PackageError(f"its inputs are left to the base, version {version}, which has no reference inputs "
                               "kept on board; build the delta with --with-inputs")
        return inputs

    def reference_check(self, data: bytes, reference: ReferenceSet, tolerance: float, threads: int = 1,
                        batch: int = 64, opener: Callable[[bytes], Any] | None = None) -> ReferenceResult:
        """Run the candidate over its reference inputs in a real session (the providers jobs use), opened by
        ``opener`` (the worker's, which answers its watchdog while TensorRT builds) or else here."""
        try:
            session = (opener or (lambda d: open_session(d, threads=threads)))(data).session
        except SessionError as exc:  # even the CPU refused it: its words say what is wrong (an opset, an operator)
            return ReferenceResult(float("inf"), "", f"onnxruntime will not open it: {exc.model_reason[:150]}",
                                   tolerance)
        except Exception as exc:  # noqa: BLE001 - the worker's own refusals (an open that never ended)
            return ReferenceResult(float("inf"), "", f"it could not be opened: {type(exc).__name__}: "
                                   f"{ort_message(exc)[:150]}", tolerance)
        try:
            actual = run_outputs(session, reference.x, list(reference.outputs), batch)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors: the model fails its check
            return ReferenceResult(float("inf"), "", f"the model does not run on its reference inputs: "
                                   f"{type(exc).__name__}: {ort_message(exc)[:120]}", tolerance)
        return compare_outputs(actual, reference.outputs, tolerance)


def _read(directory: Path, name: str, limit_bytes: int, limit: str, signed_bytes: int | None = None) -> bytes:
    """staging/``name`` through :func:`read_limited` (``limit`` names its limit in a refusal; ``signed_bytes``:
    the size the signed manifest gives it)."""
    try:
        return read_limited(directory / name, limit_bytes, signed_bytes)[0]
    except ReadRefused as exc:
        why = {"size": " (the signed manifest's size_bytes: cut short or altered on the way, uplink it again)",
               "limit": f" ({limit})"}.get(exc.kind, "")
        raise Refusal(f"staging/{name}: {exc}{why}") from None
    except OSError as exc:
        raise Refusal(f"no uplinked file staging/{name}: {exc.strerror or exc}") from None


def _embedded(what: str, model: bytes) -> None:
    """Refuse a model a tensor of which keeps its data in an external file, before any session opens it (MDL-002)."""
    try:
        refuse_external_data(model, what)
    except PackageError as exc:
        raise Refusal(str(exc)) from None


def _check_sha(what: str, data: bytes, signed: str) -> None:
    actual = sha256_hex(data)
    if actual != signed:
        raise Refusal(f"{what}: SHA-256 {actual[:16]}… is not the signed {signed[:16]}… (cut short or altered "
                      "on the way: uplink it again)")
