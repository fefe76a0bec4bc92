"""The model store on the board: ONNX files with a SHA-256-checked manifest and a golden copy.

Layout under ``root``::

    manifest.json                 checked JSON (flight.storage): one entry per model (the active
                                  version), and each model's lifecycle: fallback, probation, provenance
    NAME@VERSION.onnx             the working copy: the active version, and the fallback version
    NAME@VERSION.ref.npz          a version's reference set (flight.compute.package), where one is kept
    golden/manifest.json          the golden copy's own manifest, mode 0444
    golden/NAME@VERSION.onnx      the golden copy, mode 0444

A model file is checked against its manifest SHA-256 every time it is loaded: flash
wears, radiation flips bits, an upload can be cut off, and a model that computes
something subtly wrong is worse than one that refuses to load. A refusal is a
:class:`ModelIntegrityError` carrying the expected and actual hashes.

The golden copy is the known-good model that shipped (or that the ground blessed): a
second directory with its own manifest, so a corrupt working manifest does not take it
down too. Its files are made read-only (0444) and only ``install(..., golden=True)``
writes there; loading, falling back and verifying only read. 0444 stops a stray write
from this process or another, not root deliberately replacing the file; on flight
hardware put ``golden_root`` on a partition mounted read-only, which this class is
happy with because it never writes there except on an explicit golden install.

Active and fallback: :meth:`ModelStore.install` replaces a model (the shipped model, a golden
install); :meth:`ModelStore.activate` makes a new version active and keeps the one it replaces
as the fallback, both checked by SHA-256 whenever they are read, and puts the new one on
probation until the worker has seen it run a job (:meth:`ModelStore.end_probation`).
:meth:`ModelStore.rollback` swaps the two. The manifest is written last, atomically, so a
power cut leaves the old state or the new one; files no version refers to any more are
deleted only after it, those a power cut left behind at the next start
(:meth:`ModelStore.remove_unreferenced`), and those of a write the disk refused at once. A
golden install whose golden copy cannot be written puts the working manifest back, and one of a
version the golden copy holds with other bytes is refused before anything is written: a refused
install changes nothing. A golden install is two manifests: a power cut between them leaves the
new version active and the golden copy as it was, and the same install sent again writes the
golden copy.

Use the verified bytes, not the path: ``open_session(loaded.bytes)`` runs exactly what
was checked, while reopening ``loaded.path`` would read the flash again, after the check.

Not safe for two writers at once; the agent is the only one that installs.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from flight.compute.checks import CHECK_OUTPUT, RANGE_OUTPUT
from flight.storage import CorruptFile, read_checked_json, write_atomic, write_checked_json

MANIFEST = "manifest.json"
CORRUPT_SUFFIX = ".corrupt"  # a working manifest that failed its check, copied aside by rebuild_working
GOLDEN_DIR = "golden"
GOLDEN_MODE = 0o444
MANIFEST_SCHEMA = 1

# Names and versions become file names: keep them to one safe path component.
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
# A file the store writes for a version: its model, its reference set.
_STORE_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}@[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}\.(?:onnx|ref\.npz)")


class Copy(str, Enum):
    WORKING = "working"
    GOLDEN = "golden"


class Problem(str, Enum):
    """What can be wrong with a stored model; the value goes into events and selftest reports."""

    HASH_MISMATCH = "hash_mismatch"  # the file's SHA-256 is not the manifest's
    MISSING_FILE = "missing_file"  # the manifest lists a file that is not there
    UNREADABLE_FILE = "unreadable_file"  # the file is there but reading it failed (I/O error)
    MANIFEST_CORRUPT = "manifest_corrupt"  # the manifest fails its own check or its schema
    GOLDEN_WRITABLE = "golden_writable"  # a golden file lost its read-only mode


class ModelNotFound(LookupError):
    """No model of that name in the store (or in that copy of it)."""

    def __init__(self, name: str, copy: Copy, installed: list[str]):
        self.name, self.copy, self.installed = name, copy, installed
        have = ", ".join(installed) if installed else "none"
        super().__init__(f"no model {name!r} in the {copy.value} copy (installed: {have}); install it first")


class InvalidModel(ValueError):
    """``install`` was given something that is not a model onnxruntime can load, or a bad name."""


class ModelIntegrityError(Exception):
    """A stored model failed its check and was refused. Carries the numbers.

    ``expected_sha256`` is the manifest's hash and ``actual_sha256`` the file's, where
    known (a missing file has no actual hash, a corrupt manifest no expected one).
    """

    def __init__(
        self,
        name: str | None,
        copy: Copy,
        problem: Problem,
        path: Path,
        expected_sha256: str | None = None,
        actual_sha256: str | None = None,
        detail: str = "",
    ):
        self.name, self.copy, self.problem, self.path = name, copy, problem, path
        self.expected_sha256, self.actual_sha256, self.detail = expected_sha256, actual_sha256, detail
        what = {
            Problem.HASH_MISMATCH: "SHA-256 mismatch, the file is corrupt",
            Problem.MISSING_FILE: "file missing",
            Problem.UNREADABLE_FILE: "file unreadable",
            Problem.MANIFEST_CORRUPT: "manifest corrupt",
            Problem.GOLDEN_WRITABLE: "golden file is writable",
        }[problem]
        hashes = ""
        if expected_sha256 or actual_sha256:
            hashes = f" (expected {_short(expected_sha256)}, actual {_short(actual_sha256)})"
        todo = (
            "load_or_golden() falls back to the golden copy; reinstall to repair"
            if copy is Copy.WORKING
            else "reinstall the golden copy from the ground"
        )
        model = f"model {name!r}" if name else "model store"
        more = f": {detail}" if detail else ""
        super().__init__(f"{model}, {copy.value} copy, {path}: {what}{hashes}{more}; {todo}")


class NoGoodCopy(ModelIntegrityError):
    """Both the working and the golden copy failed; ``working`` and ``golden`` are the two errors."""

    def __init__(self, working: Exception, golden: ModelIntegrityError):
        self.working, self.golden = working, golden
        super().__init__(
            golden.name, Copy.GOLDEN, golden.problem, golden.path, golden.expected_sha256, golden.actual_sha256,
            f"{golden.detail + '; ' if golden.detail else ''}and the working copy failed too ({working})",
        )


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str | None, ...]  # str: a symbolic dimension such as "N"
    dtype: str  # onnxruntime's spelling, e.g. "tensor(float)"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> TensorSpec:
        shape = tuple(body["shape"])
        if not isinstance(body["name"], str) or not all(d is None or isinstance(d, (int, str)) for d in shape):
            raise ValueError(f"bad tensor spec {body!r}")
        return cls(body["name"], shape, str(body["dtype"]))


@dataclass(frozen=True)
class ModelEntry:
    """One model in a manifest; validated here, the one place entries are built from JSON."""

    name: str
    version: str
    file: str
    sha256: str
    size_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        if not _SAFE.fullmatch(self.name) or not _SAFE.fullmatch(self.version):
            raise ValueError(f"name {self.name!r} / version {self.version!r}: use letters, digits and _ . + - only")
        if self.file != _file_name(self.name, self.version):
            raise ValueError(f"file {self.file!r} is not {_file_name(self.name, self.version)!r}")
        if not _SHA256_HEX.match(self.sha256):
            raise ValueError(f"sha256 {self.sha256!r} is not 64 lower-case hex digits")
        if not isinstance(self.size_bytes, int) or self.size_bytes < 0:
            raise ValueError(f"size_bytes {self.size_bytes!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "file": self.file,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ModelEntry:
        return cls(
            name=body["name"],
            version=body["version"],
            file=body["file"],
            sha256=body["sha256"],
            size_bytes=body["size_bytes"],
            inputs=tuple(TensorSpec.from_json(t) for t in body["inputs"]),
            outputs=tuple(TensorSpec.from_json(t) for t in body["outputs"]),
        )


@dataclass(frozen=True)
class LoadedModel:
    """A model whose bytes matched the manifest's SHA-256 when they were read.

    ``from_golden`` is True when :meth:`ModelStore.load_or_golden` had to fall back; then
    ``fallback_reason`` says what was wrong with the working copy (for the event).
    """

    name: str
    path: Path
    bytes: bytes
    version: str
    sha256: str
    from_golden: bool
    entry: ModelEntry
    fallback_reason: str = ""


@dataclass(frozen=True)
class StoreProblem:
    """One finding of :meth:`ModelStore.verify_all`; ``name`` is None for a whole-manifest problem."""

    copy: Copy
    name: str | None
    problem: Problem
    path: Path
    detail: str


@dataclass(frozen=True)
class Provenance:
    """Where a version came from: who uplinked it (the operator whose key signed it; ``shipped``
    for the model built into the flight software; ``unsigned`` for an unsigned install), when
    the package was made and when it became active, and the SHA-256 of its stored reference set."""

    uplinked_by: str
    signed: bool
    created_utc: str = ""
    activated_unix_s: float = 0.0
    reference_sha256: str = ""  # "" when no reference set is kept for this version

    def to_json(self) -> dict[str, Any]:
        return {"uplinked_by": self.uplinked_by, "signed": self.signed, "created_utc": self.created_utc,
                "activated_unix_s": self.activated_unix_s, "reference_sha256": self.reference_sha256}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Provenance:
        out = cls(str(body["uplinked_by"]), bool(body["signed"]), str(body.get("created_utc", "")),
                  float(body.get("activated_unix_s", 0.0)), str(body.get("reference_sha256", "")))
        if out.reference_sha256 and not _SHA256_HEX.match(out.reference_sha256):
            raise ValueError(f"reference_sha256 {out.reference_sha256!r}")
        return out


UNKNOWN_PROVENANCE = Provenance("unknown", False)


@dataclass(frozen=True)
class _Life:
    """One model's lifecycle in the working manifest (the active entry is in ``models``)."""

    fallback: ModelEntry | None = None
    probation: bool = False
    provenance: dict[str, Provenance] = field(default_factory=dict)  # by version: the active's, the fallback's
    last_rollback: dict[str, Any] | None = None
    # The kept versions known to have run a job, besides the active one off probation (which has, or came as the
    # shipped or golden model): a commanded rollback puts a version that ran back on probation (:meth:`ran`).
    proven: tuple[str, ...] = ()

    def ran(self, active: ModelEntry | None) -> set[str]:
        """The versions kept (``active``, the fallback) that have run a job: not on probation, or known to."""
        kept = {e.version for e in (active, self.fallback) if e is not None}
        return ({active.version} if active is not None and not self.probation else set()) | (set(self.proven) & kept)

    def to_json(self) -> dict[str, Any]:
        return {"fallback": self.fallback.to_json() if self.fallback else None, "probation": self.probation,
                "provenance": {v: p.to_json() for v, p in sorted(self.provenance.items())},
                "last_rollback": self.last_rollback, "proven": sorted(self.proven)}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> _Life:
        fallback = ModelEntry.from_json(body["fallback"]) if body.get("fallback") is not None else None
        last = body.get("last_rollback")
        if last is not None and not isinstance(last, dict):
            raise ValueError("last_rollback must be a map")
        proven = body.get("proven")
        if proven is None:  # a manifest from before it was kept: the fallback was taken to be a version that ran
            proven = [fallback.version] if fallback is not None else []
        if not isinstance(proven, list) or not all(isinstance(v, str) for v in proven):
            raise ValueError("proven must be a list of versions")
        return cls(fallback, bool(body.get("probation", False)),
                   {str(v): Provenance.from_json(p) for v, p in body.get("provenance", {}).items()}, last,
                   tuple(sorted(proven)))


@dataclass(frozen=True)
class ModelState:
    """A model's versions as the store has them: the active one (what runs), the fallback (what a
    rollback restores; None when there is none), whether the active one is on probation (not yet
    seen to run a job), the provenance of both, and the last rollback (from, to, reason, automatic)."""

    name: str
    active: ModelEntry
    fallback: ModelEntry | None
    probation: bool
    provenance: dict[str, Provenance]
    last_rollback: dict[str, Any] | None = None
    ran: frozenset[str] = frozenset()  # the versions kept known to have run a job (not swapped automatically)

    def provenance_of(self, version: str) -> Provenance:
        return self.provenance.get(version, UNKNOWN_PROVENANCE)

    @property
    def active_provenance(self) -> Provenance:
        return self.provenance_of(self.active.version)


class NoFallback(LookupError):
    """A rollback was asked for a model with no fallback version."""

    def __init__(self, name: str, active_version: str):
        self.name, self.active_version = name, active_version
        super().__init__(f"model {name!r} has no fallback version to roll back to (active: version "
                         f"{active_version}); a fallback is kept once a second version has been installed")


class RanBefore(NoFallback):
    """An automatic rollback asked of a version that has run a job (MDL-005: such a version is not swapped
    automatically; MODEL_ROLLBACK swaps it). A :class:`NoFallback`: for the worker there is none to go to."""

    def __init__(self, name: str, active_version: str, fallback_version: str):
        self.name, self.active_version = name, active_version
        LookupError.__init__(self, f"model {name!r} version {active_version} has run a job before: not swapped "
                                   f"automatically for version {fallback_version} (MODEL_ROLLBACK does that)")


class StoreFull(OSError):
    """The disk had no room for a file of the store (ENOSPC, EDQUOT): says which, how big, the room left."""


def _raise_if_full(exc: BaseException, copy: Copy, directory: Path, file_name: str, size_bytes: int) -> None:
    """Raise :class:`StoreFull` naming the file for a write the disk refused as full (found in audit: an install
    on a full disk was refused with "OSError: [Errno 28] No space left on device", naming no file, size or cure);
    return for any other error."""
    if not isinstance(exc, OSError) or isinstance(exc, StoreFull) or exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return
    try:
        st = os.statvfs(directory)
        free = f"{st.f_bavail * st.f_frsize} bytes free"
    except OSError:
        free = "room left unknown"
    size = f"{size_bytes} bytes, " if size_bytes else ""
    raise StoreFull(exc.errno, f"model store, {copy.value} copy: no room on the disk for {file_name} ({size}{free}); "
                               "the store is as it was: free room (FILE_DELETE) and send it again") from None


class VersionNotFound(LookupError):
    """No version of a model with the SHA-256 asked for (a delta's base) among the active and the fallback."""


class ModelStore:
    """Models on the board's flash; see the module docstring for the layout and the rules.

    Creating a store reads nothing and writes nothing; a directory that does not exist
    yet is an empty store.
    """

    def __init__(self, root: Path | str, golden_root: Path | str | None = None):
        self.root = Path(root)
        self.golden_root = Path(golden_root) if golden_root is not None else self.root / GOLDEN_DIR

    # -- writing ------------------------------------------------------------------

    def install(self, name: str, version: str, model: bytes | Path | str, golden: bool = False,
                provenance: Provenance | None = None, reference: bytes | None = None) -> ModelEntry:
        """Install ``model`` (the ONNX bytes, or a path to them) as ``name`` at ``version``.

        Replaces the working copy of ``name`` and forgets any fallback (see :meth:`activate`
        to keep one). With ``golden=True`` the same bytes also become the golden copy
        (read-only). The model is opened once with onnxruntime on the CPU first, so a file it
        cannot load is refused before anything is replaced; its input and output names and
        shapes go into the manifest. ``reference`` (a reference set's bytes) is kept with it.
        """
        data, entry = self._entry(name, version, model)
        # Read both manifests before writing anything: a corrupt one stops the install
        # instead of being overwritten with a manifest that forgot the other models.
        golden_manifest = self._golden_for(entry) if golden else None
        models, life = self._read(Copy.WORKING)
        prov, files = self._new_files(entry, data, provenance, reference)
        before = (dict(models), dict(life))
        models[name] = entry
        life[name] = _Life(provenance={version: prov} if prov else {})
        dropped = self._commit(models, life, files, delete=golden_manifest is None)
        if golden_manifest is not None:
            self._golden_or_undo(golden_manifest, entry, data, *before)
            self._delete(dropped)
        return entry

    def activate(self, name: str, version: str, model: bytes | Path | str, provenance: Provenance,
                 reference: bytes | None = None, golden: bool = False) -> ModelState:
        """Make ``model`` the active version of ``name``, keeping the version it replaces as the fallback
        (where that one is still on probation, never having run a job, its own fallback stays instead).

        The new version goes on probation (see :meth:`end_probation`). The version that is no longer
        kept is deleted: the store keeps two versions of a model, never more. A version equal to the
        active or the fallback one's is refused (it would overwrite a kept version), but for a golden
        install of the active version with its own bytes whose golden copy was not yet written (a power
        cut between the two writes): that one writes the golden copy and changes nothing else.
        """
        data, entry = self._entry(name, version, model)
        golden_manifest = self._golden_for(entry) if golden else None
        models, life = self._read(Copy.WORKING)
        previous = models.get(name)
        old = life.get(name, _Life())
        # A file the manifest refers to is never rewritten in place: a power cut would leave a
        # version whose bytes are neither the old nor the new ones.
        if golden_manifest is not None and previous is not None and previous.version == version \
                and previous.sha256 == entry.sha256 and golden_manifest.get(name) != entry:
            # A golden install of the active version, the same bytes, that did not reach the golden copy (a power cut
            # between the two writes): sent again, the golden copy is written now (found in audit: refused for good as
            # the active version, and the golden copy kept the old one)
            self._write_entry(Copy.GOLDEN, golden_manifest, entry, data)
            return self.state(name)
        if previous is not None:
            check_same_use(name, version, (entry.inputs, entry.outputs), f"the active version {previous.version}",
                           (previous.inputs, previous.outputs))
        for what, kept in (("active", previous), ("fallback", old.fallback)):
            if kept is not None and kept.version == version:
                raise InvalidModel(f"version {version} is the {what} version of {name!r} already; give the new "
                                   "model another version" + (" (or MODEL_ROLLBACK to it)" if what == "fallback"
                                                              else ""))
        prov, files = self._new_files(entry, data, provenance, reference)
        # The fallback is a version that ran: one replaced that never ran a job gives way to its own fallback
        # where that one did (found in audit: it became the fallback, the proven version was deleted, and an
        # automatic rollback then restored the unproven one, off probation); so too after a commanded rollback
        # (found in audit: the version restored, on probation though it had run, gave way to the one rolled back
        # from, which never ran, and was deleted). Neither ran: the older one, as before.
        ran = old.ran(previous)
        fallback = old.fallback if previous is not None and previous.version not in ran \
            and old.fallback is not None else previous
        kept = {version: prov}
        if fallback is not None:
            kept[fallback.version] = old.provenance.get(fallback.version, UNKNOWN_PROVENANCE)
        before = (dict(models), dict(life))
        models[name] = entry
        life[name] = _Life(fallback, True, kept, old.last_rollback,
                           (fallback.version,) if fallback is not None and fallback.version in ran else ())
        dropped = self._commit(models, life, files, delete=golden_manifest is None)
        if golden_manifest is not None:
            self._golden_or_undo(golden_manifest, entry, data, *before)
            self._delete(dropped)
        return self.state(name)

    def rollback(self, name: str, reason: str, automatic: bool, now_unix_s: float = 0.0) -> ModelState:
        """Make the fallback version of ``name`` active again; the active one becomes the fallback.

        The fallback's file is checked first: a corrupt one raises :class:`ModelIntegrityError`
        and nothing changes. :class:`NoFallback` when there is none. A commanded rollback puts
        the restored version on probation, as any newly active version; an automatic one does
        not (it restores a version that ran before), so two bad versions cannot swap forever.
        An automatic one of a version that has run a job raises :class:`RanBefore`, nothing changed: a
        commanded rollback to a version that ran put it on probation, and its next failure swapped it
        for the version the operator had rolled back from, never run, off probation (found in audit).
        """
        models, life = self._read(Copy.WORKING)
        active = models.get(name)
        if active is None:
            raise ModelNotFound(name, Copy.WORKING, sorted(models))
        current = life.get(name, _Life())
        if current.fallback is None:
            raise NoFallback(name, active.version)
        if automatic and active.version in current.ran(active):
            raise RanBefore(name, active.version, current.fallback.version)
        self._check(Copy.WORKING, current.fallback)
        record = {"from": active.version, "to": current.fallback.version, "reason": reason[:200],
                  "automatic": automatic, "unix_s": now_unix_s}
        models[name] = current.fallback
        # What ran is kept through the swap: a commanded rollback puts the version it restores on probation, as
        # any newly active one, and that says nothing of whether either version ran (an automatic one restores a
        # version that ran: off probation)
        life[name] = _Life(active, not automatic, current.provenance, record, tuple(sorted(current.ran(active))))
        self._commit(models, life, {})
        return self.state(name)

    def end_probation(self, name: str) -> None:
        """The active version of ``name`` has run a job: no longer rolled back automatically."""
        models, life = self._read(Copy.WORKING)
        current = life.get(name)
        if name in models and current is not None and current.probation:
            life[name] = replace(current, probation=False)
            self._commit(models, life, {})

    def _entry(self, name: str, version: str, model: bytes | Path | str) -> tuple[bytes, ModelEntry]:
        data = model if isinstance(model, bytes) else Path(model).read_bytes()
        if not _SAFE.fullmatch(name) or not _SAFE.fullmatch(version):
            raise InvalidModel(f"name {name!r} / version {version!r}: use letters, digits and _ . + - only (max 64)")
        inputs, outputs = describe_model(data)
        return data, ModelEntry(
            name=name,
            version=version,
            file=_file_name(name, version),
            sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
            inputs=inputs,
            outputs=outputs,
        )

    @staticmethod
    def _new_files(entry: ModelEntry, data: bytes, provenance: Provenance | None,
                   reference: bytes | None) -> tuple[Provenance | None, dict[str, tuple[bytes, str]]]:
        files = {entry.file: (data, entry.sha256)}
        if reference is not None:
            ref_sha = hashlib.sha256(reference).hexdigest()
            provenance = replace(provenance or UNKNOWN_PROVENANCE, reference_sha256=ref_sha)
            files[_reference_name(entry.name, entry.version)] = (reference, ref_sha)
        elif provenance is not None:
            provenance = replace(provenance, reference_sha256="")
        return provenance, files

    def _commit(self, models: dict[str, ModelEntry], life: dict[str, _Life],
                files: dict[str, tuple[bytes, str]], delete: bool = True, previous: set[str] | None = None) -> set[str]:
        """Write new files (each read back and checked), then the working manifest, then delete
        the files it no longer refers to (or, ``delete`` false, return their names, for a commit that
        may yet be undone). A power cut anywhere leaves a manifest whose files are there. ``previous``:
        the files the manifest replaced referred to, where it cannot be read (a rebuild: none deleted)."""
        directory = self.root
        before = previous if previous is not None else (
            _referenced(*self._read(Copy.WORKING)) if (directory / MANIFEST).exists() else set())
        written: list[str] = []
        writing = (MANIFEST, 0)
        try:
            for file_name, (data, sha) in files.items():
                path, writing = directory / file_name, (file_name, len(data))
                write_atomic(path, data)
                written.append(file_name)  # replaced or made: a write that failed left what was there (a review)
                written_sha = hashlib.sha256(path.read_bytes()).hexdigest()  # read back: flash can fail on write too
                if written_sha != sha:
                    raise ModelIntegrityError(file_name.split("@")[0], Copy.WORKING, Problem.HASH_MISMATCH, path, sha,
                                              written_sha, "on read-back after writing")
                path.chmod(0o644)
            writing = (MANIFEST, 0)
            body: dict[str, Any] = {"schema": MANIFEST_SCHEMA,
                                    "models": {k: e.to_json() for k, e in sorted(models.items())}}
            lifecycle = {k: v.to_json() for k, v in sorted(life.items()) if k in models and v != _Life()}
            if lifecycle:
                body["lifecycle"] = lifecycle
            write_checked_json(directory / MANIFEST, body)
        except BaseException as exc:
            self._drop_unnamed(Copy.WORKING, written)
            _raise_if_full(exc, Copy.WORKING, directory, *writing)
            raise
        (directory / MANIFEST).chmod(0o644)
        dropped = before - _referenced(models, life)
        if delete:
            self._delete(dropped)
        return dropped

    def _delete(self, names: set[str]) -> None:
        for file_name in sorted(names):
            (self.root / file_name).unlink(missing_ok=True)

    def _drop_unnamed(self, copy: Copy, names: list[str]) -> None:
        """After a write of ``copy`` that failed (a full disk, a read-back that did not match): delete the files of
        ``names`` it wrote (replaced or made) that the copy's manifest, as it stands on disk, does not name, so that
        a refused install leaves nothing behind (found in audit: its model and reference set stayed until the next
        start, and on a full disk, the usual cause, took the room the next try needed). None where that manifest is
        missing or does not read: :meth:`remove_unreferenced` keeps such files too, for its repair."""
        directory = self._dir(copy)
        if not (directory / MANIFEST).exists():  # _read gives none for a missing one: that would name nothing
            return
        try:
            named = _referenced(*self._read(copy))
        except (ModelIntegrityError, OSError):
            return
        for file_name in names:
            path = directory / file_name
            if file_name in named or path.is_symlink() or not path.is_file():
                continue
            try:
                path.unlink()
            except OSError:
                pass  # left for remove_unreferenced at the next start

    def _golden_for(self, entry: ModelEntry) -> dict[str, ModelEntry]:
        """The golden manifest, for a golden install of ``entry``; :class:`InvalidModel` where the golden
        copy holds that version with other bytes: its file would be replaced before the manifest that
        vouches for it, and a write that then failed, or a power cut, would leave the golden copy
        corrupt (found in review)."""
        manifest = self._read_manifest(Copy.GOLDEN)
        held = next((e for e in manifest.values() if e.file == entry.file), None)
        if held is not None and held.sha256 != entry.sha256:
            raise InvalidModel(f"version {entry.version} of {entry.name!r} is in the golden copy already, with other "
                               "bytes; give the new model another version")
        return manifest

    def _golden_or_undo(self, manifest: dict[str, ModelEntry], entry: ModelEntry, data: bytes,
                        models: dict[str, ModelEntry], life: dict[str, _Life]) -> None:
        """Write the golden copy of the version just committed; where that fails (a golden partition
        mounted read-only, a full disk), put the working manifest back as it was (``models``,
        ``life``) and raise, so that an install refused changed nothing (found in audit: the version
        was refused, yet active on disk, and ran from the next start); the files the commit dropped
        are deleted only after this. Where the new file replaced one the old manifest names (a
        reinstall of the same version), there is nothing to go back to."""
        try:
            self._write_entry(Copy.GOLDEN, manifest, entry, data)
        except BaseException:
            if entry.file not in _referenced(models, life):
                self._commit(models, life, {})
            raise

    def rebuild_working(self) -> tuple[ModelIntegrityError, list[str]] | None:
        """Where the working manifest fails its check, copy it aside (``manifest.json.corrupt``, the latest
        kept, where the disk lets it) and make a new one from the golden copy: its models active again, each
        file checked against the golden manifest and written (read back) into the working copy. So too where it
        is missing beside a golden manifest (not a first start). Returns the working manifest's error and the
        models the new one holds; None, with nothing done, where it checks out (or there is none and no golden
        manifest either: a first start). Why: with the working manifest corrupt the worker died at each start,
        and an install, which reads that manifest first, was refused: no model ran, and nothing the ground could
        send repaired it (found in audit). Versions uplinked since are not in the new manifest (what vouched for
        their bytes is gone): installed again, they run again; their files go at the next start as unreferenced.
        Raises :class:`ModelIntegrityError` where the golden manifest is corrupt too (nothing trusted to rebuild
        from: the working one is left alone)."""
        path = self.root / MANIFEST
        if path.exists():
            try:
                self._read(Copy.WORKING)
                return None
            except ModelIntegrityError as exc:
                if exc.problem is not Problem.MANIFEST_CORRUPT:
                    raise
                error = exc
        elif (self._dir(Copy.GOLDEN) / MANIFEST).exists():  # not a first start: the golden copy has models (found in
            error = ModelIntegrityError(None, Copy.WORKING, Problem.MISSING_FILE, path,  # audit: taken for one, and
                                        detail="the working manifest is missing")   # the shipped model replaced the
        else:                                                                        # ground's golden version)
            return None
        golden = self._read_manifest(Copy.GOLDEN)
        models: dict[str, ModelEntry] = {}
        files: dict[str, tuple[bytes, str]] = {}
        for name, entry in sorted(golden.items()):
            try:
                _path, data = self._check(Copy.GOLDEN, entry)
            except ModelIntegrityError:
                continue  # a golden file gone bad: that model is not in the working copy either
            models[name], files[entry.file] = entry, (data, entry.sha256)
        if path.exists():  # copied aside, not moved: a power cut before the new one is written finds it as it was
            try:  # (found in audit: it found none); best effort: a disk that will not read or take it stops nothing
                write_atomic(self.root / (MANIFEST + CORRUPT_SUFFIX), path.read_bytes())
            except OSError:
                pass
        self._commit(models, {}, files, previous=set())
        return error, sorted(models)

    def remove_unreferenced(self) -> list[Path]:
        """Delete the model files (``NAME@VERSION.onnx``, ``.ref.npz``) of either copy that its manifest
        does not name: what an install cut short by a power cut left, written before the manifest that
        would have named them, or named by the manifest before it and not yet deleted (found in audit:
        each such cut left a model's worth of flash behind, for good). A copy whose manifest is missing
        or corrupt keeps every file, for its repair; a file that cannot be deleted (a read-only golden
        partition) stays. For the start, before anything installs. Returns the paths deleted."""
        removed: list[Path] = []
        for copy in Copy:
            directory = self._dir(copy)
            if not (directory / MANIFEST).exists():
                continue
            try:
                models, life = self._read(copy)
                names = list(directory.iterdir())
            except (ModelIntegrityError, OSError):
                continue
            named = _referenced(models, life)
            for path in names:
                if path.name in named or not _STORE_FILE.fullmatch(path.name) or path.is_symlink() \
                        or not path.is_file():
                    continue
                try:
                    path.unlink()
                except OSError:
                    continue
                removed.append(path)
        return removed

    def _write_entry(self, copy: Copy, manifest: dict[str, ModelEntry], entry: ModelEntry, data: bytes) -> None:
        directory = self._dir(copy)
        path = directory / entry.file
        wrote: list[str] = []
        writing = (entry.file, len(data))
        try:
            write_atomic(path, data)
            wrote.append(entry.file)  # a write that failed left what was there: not this call's to delete (a review)
            written = hashlib.sha256(path.read_bytes()).hexdigest()  # read back: flash can fail on write too
            if written != entry.sha256:
                raise ModelIntegrityError(
                    entry.name, copy, Problem.HASH_MISMATCH, path, entry.sha256, written, "on read-back after writing"
                )
            previous = manifest.get(entry.name)
            manifest = {**manifest, entry.name: entry}
            manifest_path, writing = directory / MANIFEST, (MANIFEST, 0)
            models = {k: e.to_json() for k, e in sorted(manifest.items())}
            write_checked_json(manifest_path, {"schema": MANIFEST_SCHEMA, "models": models})
        except BaseException as exc:
            self._drop_unnamed(copy, wrote)
            _raise_if_full(exc, copy, directory, *writing)
            raise
        mode = GOLDEN_MODE if copy is Copy.GOLDEN else 0o644
        path.chmod(mode)
        manifest_path.chmod(mode)
        # Only after the manifest points at the new file may the old one go; a power cut
        # in between leaves an unreferenced file, never a manifest pointing at nothing.
        if previous is not None and previous.file != entry.file:
            old = directory / previous.file
            if copy is Copy.GOLDEN:
                old.chmod(0o644)
            old.unlink(missing_ok=True)

    # -- reading ------------------------------------------------------------------

    def load(self, name: str) -> LoadedModel:
        """The working copy of ``name``, its SHA-256 checked. Raises ModelIntegrityError or ModelNotFound."""
        return self._load(Copy.WORKING, name)

    def load_golden(self, name: str) -> LoadedModel:
        """The golden copy of ``name``, its SHA-256 checked."""
        return self._load(Copy.GOLDEN, name)

    def load_or_golden(self, name: str) -> LoadedModel:
        """The working copy if it checks out, else the golden copy (checked too) with ``from_golden=True``.

        Raises :class:`NoGoodCopy` when both fail, and the working copy's error when the
        golden copy simply does not have ``name``.
        """
        try:
            return self._load(Copy.WORKING, name)
        except (ModelIntegrityError, ModelNotFound) as working_error:
            try:
                golden = self._load(Copy.GOLDEN, name)
            except ModelNotFound:
                raise working_error from None
            except ModelIntegrityError as golden_error:
                raise NoGoodCopy(working_error, golden_error) from working_error
            return replace(golden, fallback_reason=str(working_error))

    def state(self, name: str) -> ModelState:
        """The versions of ``name`` in the working copy (reads the manifest, checks no file)."""
        models, life = self._read(Copy.WORKING)
        entry = models.get(name)
        if entry is None:
            raise ModelNotFound(name, Copy.WORKING, sorted(models))
        current = life.get(name, _Life())
        return ModelState(name, entry, current.fallback, current.probation, dict(current.provenance),
                          current.last_rollback, frozenset(current.ran(entry)))

    def load_fallback(self, name: str) -> LoadedModel:
        """The fallback version of ``name``, its SHA-256 checked; :class:`NoFallback` when there is none."""
        st = self.state(name)
        if st.fallback is None:
            raise NoFallback(name, st.active.version)
        path, data = self._check(Copy.WORKING, st.fallback)
        return LoadedModel(name, path, data, st.fallback.version, st.fallback.sha256, False, st.fallback)

    def load_version(self, name: str, sha256: str) -> LoadedModel:
        """The active or the fallback version of ``name`` whose SHA-256 is ``sha256``, checked.

        :class:`VersionNotFound` (saying which versions there are) when neither is.
        """
        st = self.state(name)
        for entry in (st.active, st.fallback):
            if entry is not None and entry.sha256 == sha256:
                path, data = self._check(Copy.WORKING, entry)
                return LoadedModel(name, path, data, entry.version, entry.sha256, False, entry)
        have = "; ".join(f"{what} version {e.version} is {e.sha256[:16]}…" for what, e in
                         (("active", st.active), ("fallback", st.fallback)) if e is not None)
        raise VersionNotFound(f"model {name!r} has no version {sha256[:16]}… ({have})")

    def load_reference(self, name: str, version: str) -> bytes | None:
        """The reference set kept with a version of ``name`` (checked), or None when none is kept."""
        prov = self.state(name).provenance.get(version)
        if prov is None or not prov.reference_sha256:
            return None
        path = self.root / _reference_name(name, version)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelIntegrityError(name, Copy.WORKING, Problem.MISSING_FILE, path, prov.reference_sha256) from None
        except OSError as exc:
            raise ModelIntegrityError(name, Copy.WORKING, Problem.UNREADABLE_FILE, path, prov.reference_sha256,
                                      None, str(exc)) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != prov.reference_sha256:
            raise ModelIntegrityError(name, Copy.WORKING, Problem.HASH_MISMATCH, path, prov.reference_sha256, actual,
                                      "reference set")
        return data

    def list(self, copy: Copy = Copy.WORKING) -> list[ModelEntry]:
        """The entries of one copy's manifest, by name. Raises ModelIntegrityError if it is corrupt."""
        return [entry for _, entry in sorted(self._read_manifest(copy).items())]

    def verify_all(self) -> list[StoreProblem]:
        """Check every file of both copies against its manifest (for a selftest); [] when all is well."""
        problems: list[StoreProblem] = []
        for copy in Copy:
            try:
                manifest = self._read_manifest(copy)
            except ModelIntegrityError as exc:
                problems.append(StoreProblem(copy, None, exc.problem, exc.path, exc.detail))
                continue
            if copy is Copy.GOLDEN and manifest:
                problems.extend(self._writable(copy, None, self._dir(copy) / MANIFEST))
            for name, entry in sorted(manifest.items()):
                try:
                    self._check(copy, entry)
                except ModelIntegrityError as exc:
                    problems.append(StoreProblem(copy, name, exc.problem, exc.path, str(exc)))
                    continue
                if copy is Copy.GOLDEN:
                    problems.extend(self._writable(copy, name, self._dir(copy) / entry.file))
            if copy is Copy.WORKING:
                problems.extend(self._verify_lifecycle(sorted(manifest)))
        return problems

    def _verify_lifecycle(self, names: list[str]) -> list[StoreProblem]:
        """The fallback versions and the kept reference sets, checked like the active versions."""
        problems: list[StoreProblem] = []
        for name in names:
            st = self.state(name)
            checks: list[Any] = [lambda st=st: self._check(Copy.WORKING, st.fallback)] if st.fallback else []
            checks += [lambda v=v: self.load_reference(name, v) for v in sorted(st.provenance)]
            for check in checks:
                try:
                    check()
                except ModelIntegrityError as exc:
                    problems.append(StoreProblem(Copy.WORKING, name, exc.problem, exc.path, str(exc)))
        return problems

    # -- internals ----------------------------------------------------------------

    def _dir(self, copy: Copy) -> Path:
        return self.golden_root if copy is Copy.GOLDEN else self.root

    def _read_manifest(self, copy: Copy) -> dict[str, ModelEntry]:
        return self._read(copy)[0]

    def _read(self, copy: Copy) -> tuple[dict[str, ModelEntry], dict[str, _Life]]:
        """(active entries, lifecycles) of one copy's manifest; the golden copy has no lifecycle."""
        path = self._dir(copy) / MANIFEST
        if not path.exists():
            return {}, {}
        try:
            body = read_checked_json(path)
            if body.get("schema") != MANIFEST_SCHEMA:
                raise ValueError(f"schema {body.get('schema')!r}, this code reads {MANIFEST_SCHEMA}")
            entries = {name: ModelEntry.from_json(e) for name, e in body["models"].items()}
            for name, entry in entries.items():
                if name != entry.name:
                    raise ValueError(f"entry {name!r} names itself {entry.name!r}")
            life = {name: _Life.from_json(v) for name, v in body.get("lifecycle", {}).items()}
            for name, current in life.items():
                if name not in entries or (current.fallback is not None and current.fallback.name != name):
                    raise ValueError(f"lifecycle of {name!r} does not match the models")
            return entries, life
        except (CorruptFile, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelIntegrityError(None, copy, Problem.MANIFEST_CORRUPT, path, detail=str(exc)) from None
        except OSError as exc:
            raise ModelIntegrityError(None, copy, Problem.MANIFEST_CORRUPT, path, detail=f"unreadable: {exc}") from None

    def _load(self, copy: Copy, name: str) -> LoadedModel:
        manifest = self._read_manifest(copy)
        entry = manifest.get(name)
        if entry is None:
            raise ModelNotFound(name, copy, sorted(manifest))
        path, data = self._check(copy, entry)
        return LoadedModel(
            name=name, path=path, bytes=data, version=entry.version, sha256=entry.sha256,
            from_golden=copy is Copy.GOLDEN, entry=entry,
        )

    def _check(self, copy: Copy, entry: ModelEntry) -> tuple[Path, bytes]:
        path = self._dir(copy) / entry.file
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelIntegrityError(entry.name, copy, Problem.MISSING_FILE, path, entry.sha256, None) from None
        except OSError as exc:
            raise ModelIntegrityError(
                entry.name, copy, Problem.UNREADABLE_FILE, path, entry.sha256, None, str(exc)
            ) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != entry.sha256:
            size = f"{len(data)} bytes, manifest says {entry.size_bytes}" if len(data) != entry.size_bytes else ""
            raise ModelIntegrityError(entry.name, copy, Problem.HASH_MISMATCH, path, entry.sha256, actual, size)
        return path, data

    @staticmethod
    def _writable(copy: Copy, name: str | None, path: Path) -> list[StoreProblem]:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o222:
            detail = f"mode {mode:o}, should be {GOLDEN_MODE:o}"
            return [StoreProblem(copy, name, Problem.GOLDEN_WRITABLE, path, detail)]
        return []


def describe_model(data: bytes) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Input and output specs of an ONNX model, read by opening it with onnxruntime on the CPU.

    Raises :class:`InvalidModel` when onnxruntime cannot load it, or when a tensor of it keeps its
    data in an external file (:func:`external_data`).
    """
    import onnxruntime as ort  # here, not at the top: the store itself is usable without it

    outside = external_data(data)
    if outside:
        raise InvalidModel(f"tensor {outside[0][0]!r} keeps its data in the file {outside[0][1]!r} beside the model: "
                           "its SHA-256 and signature would not cover it, and it would be read from wherever the "
                           "worker runs; embed the weights in the model")

    from flight.compute.providers import ort_message  # as onnxruntime: its message without its C++ signature

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; the exception below says what failed
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        raise InvalidModel(f"onnxruntime cannot load this model: {type(exc).__name__}: {ort_message(exc)}") from None

    def spec(arg: Any) -> TensorSpec:
        return TensorSpec(arg.name, tuple(arg.shape), arg.type)

    return tuple(spec(a) for a in session.get_inputs()), tuple(spec(a) for a in session.get_outputs())


def external_data(data: bytes) -> list[tuple[str, str]]:
    """(tensor, file) for each tensor of the model ``data`` (initializers, sparse ones, Constant values,
    in subgraphs and local functions too) whose data lies in an external file: onnxruntime reads such a file relative to
    its working directory even for a model given as bytes (found in audit), so what runs would not be
    what the store's SHA-256 checked. [] when every tensor is in the bytes (or they do not parse: that
    is onnxruntime's to say)."""
    import onnx  # here, not at the top, as onnxruntime above

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)  # the bytes alone: nothing read from beside them
    except Exception:  # noqa: BLE001 - not a model protobuf reads: describe_model's onnxruntime says why
        return []
    found: list[tuple[str, str]] = []
    # Every place a tensor can be: the graphs (subgraphs too) and the model's local functions (found in
    # review: sparse ones' indices, a Constant's sparse_value and functions' nodes were missed).
    graphs: list[Any] = [model.graph]
    node_lists: list[Any] = [f.node for f in model.functions]
    tensors: list[Any] = []

    def sparse(s: Any) -> list[Any]:
        return [s.values, s.indices]

    while graphs or node_lists:
        if graphs:
            graph = graphs.pop()
            tensors += [*graph.initializer, *(t for s in graph.sparse_initializer for t in sparse(s))]
            node_lists.append(graph.node)
            continue
        for node in node_lists.pop():
            for attr in node.attribute:
                tensors += [attr.t] if attr.HasField("t") else []
                tensors += list(attr.tensors)
                tensors += sparse(attr.sparse_tensor) if attr.HasField("sparse_tensor") else []
                tensors += [t for s in attr.sparse_tensors for t in sparse(s)]
                graphs += ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
    for t in tensors:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            where = next((e.value for e in t.external_data if e.key == "location"), "?")
            found.append((t.name or "(unnamed)", where))
    return found


Specs = tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]  # a model's inputs and outputs (describe_model)


def check_same_use(name: str, version: str, specs: Specs, active: str, active_specs: Specs) -> None:
    """Refuse (:class:`InvalidModel`) a new version of ``name`` the jobs of ``active`` (what to call the active
    version) cannot use: inputs of another count, rank, element type or fixed size, or a result (the output jobs read:
    ``probabilities``, else the first) of another rank, type or fixed size. Every job of the model would fail on it
    as bad input, which rolls nothing back (found in audit: such a version, packed with reference inputs of its own
    shape, was installed, completed; with a result of rank 1, its jobs failed "AxisError: axis 1 is out of bounds")."""
    def said(tensors: tuple[TensorSpec, ...]) -> str:
        return "; ".join(f"{t.name} [{', '.join(str(d) for d in t.shape)}] {t.dtype}" for t in tensors)

    def fits(a: TensorSpec, b: TensorSpec) -> bool:
        if not a.shape or not b.shape:  # a rank onnxruntime could not infer reads as (): not known, not a scalar
            return a.dtype == b.dtype  # (found in review); the reference check and the jobs judge it
        return a.dtype == b.dtype and len(a.shape) == len(b.shape) and all(
            not (isinstance(x, int) and isinstance(y, int) and x > 0 and y > 0) or x == y
            for x, y in zip(a.shape, b.shape))

    def result(outputs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
        own = [t for t in outputs if t.name not in (CHECK_OUTPUT, RANGE_OUTPUT)]
        return tuple([t for t in own if t.name == "probabilities"][:1] or own[:1])

    for what, was, now in (("takes", active_specs[0], specs[0]),
                           ("gives", result(active_specs[1]), result(specs[1]))):
        if len(was) != len(now) or not all(map(fits, was, now)):
            raise InvalidModel(f"{name!r} v{version} {what} {said(now)}; {active}: {said(was)}: its jobs could not "
                               "use it (another use case: another name)")  # within the reply's 240 (review)


def _reference_name(name: str, version: str) -> str:
    return f"{name}@{version}.ref.npz"


def _referenced(models: dict[str, ModelEntry], life: dict[str, _Life]) -> set[str]:
    """Every file of the working directory the manifest refers to."""
    files = {e.file for e in models.values()}
    for name, current in life.items():
        if current.fallback is not None:
            files.add(current.fallback.file)
        files.update(_reference_name(name, v) for v, p in current.provenance.items() if p.reference_sha256)
    return files


def _file_name(name: str, version: str) -> str:
    # "@" is not allowed in names or versions, so no two (name, version) pairs share a file
    return f"{name}@{version}.onnx"


def _short(sha: str | None) -> str:
    return f"{sha[:12]}…" if sha else "none"
