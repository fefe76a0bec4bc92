"""The model store on the board: ONNX files with a SHA-256-checked manifest and a golden copy.

Layout under ``root``::

    manifest.json                 checked JSON (flight.storage): one entry per model
    NAME@VERSION.onnx             the working copy, replaced by each install
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

Use the verified bytes, not the path: ``open_session(loaded.bytes)`` runs exactly what
was checked, while reopening ``loaded.path`` would read the flash again, after the check.

Not safe for two writers at once; the agent is the only one that installs.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

from flight.storage import CorruptFile, read_checked_json, write_atomic, write_checked_json

MANIFEST = "manifest.json"
GOLDEN_DIR = "golden"
GOLDEN_MODE = 0o444
MANIFEST_SCHEMA = 1

# Names and versions become file names: keep them to one safe path component.
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


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
        if not _SAFE.match(self.name) or not _SAFE.match(self.version):
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


class ModelStore:
    """Models on the board's flash; see the module docstring for the layout and the rules.

    Creating a store reads nothing and writes nothing; a directory that does not exist
    yet is an empty store.
    """

    def __init__(self, root: Path | str, golden_root: Path | str | None = None):
        self.root = Path(root)
        self.golden_root = Path(golden_root) if golden_root is not None else self.root / GOLDEN_DIR

    # -- writing ------------------------------------------------------------------

    def install(self, name: str, version: str, model: bytes | Path | str, golden: bool = False) -> ModelEntry:
        """Install ``model`` (the ONNX bytes, or a path to them) as ``name`` at ``version``.

        Replaces the working copy of ``name``. With ``golden=True`` the same bytes also
        become the golden copy (read-only). The model is opened once with onnxruntime on
        the CPU first, so a file it cannot load is refused before anything is replaced;
        its input and output names and shapes go into the manifest.
        """
        data = model if isinstance(model, bytes) else Path(model).read_bytes()
        if not _SAFE.match(name) or not _SAFE.match(version):
            raise InvalidModel(f"name {name!r} / version {version!r}: use letters, digits and _ . + - only (max 64)")
        inputs, outputs = describe_model(data)
        entry = ModelEntry(
            name=name,
            version=version,
            file=_file_name(name, version),
            sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
            inputs=inputs,
            outputs=outputs,
        )
        # Read both manifests before writing anything: a corrupt one stops the install
        # instead of being overwritten with a manifest that forgot the other models.
        copies = [Copy.WORKING, Copy.GOLDEN] if golden else [Copy.WORKING]
        manifests = {copy: self._read_manifest(copy) for copy in copies}
        for copy in copies:
            self._write_entry(copy, manifests[copy], entry, data)
        return entry

    def _write_entry(self, copy: Copy, manifest: dict[str, ModelEntry], entry: ModelEntry, data: bytes) -> None:
        directory = self._dir(copy)
        path = directory / entry.file
        write_atomic(path, data)
        written = hashlib.sha256(path.read_bytes()).hexdigest()  # read back: flash can fail on write too
        if written != entry.sha256:
            raise ModelIntegrityError(
                entry.name, copy, Problem.HASH_MISMATCH, path, entry.sha256, written, "on read-back after writing"
            )
        previous = manifest.get(entry.name)
        manifest = {**manifest, entry.name: entry}
        manifest_path = directory / MANIFEST
        models = {k: e.to_json() for k, e in sorted(manifest.items())}
        write_checked_json(manifest_path, {"schema": MANIFEST_SCHEMA, "models": models})
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
        return problems

    # -- internals ----------------------------------------------------------------

    def _dir(self, copy: Copy) -> Path:
        return self.golden_root if copy is Copy.GOLDEN else self.root

    def _read_manifest(self, copy: Copy) -> dict[str, ModelEntry]:
        path = self._dir(copy) / MANIFEST
        if not path.exists():
            return {}
        try:
            body = read_checked_json(path)
            if body.get("schema") != MANIFEST_SCHEMA:
                raise ValueError(f"schema {body.get('schema')!r}, this code reads {MANIFEST_SCHEMA}")
            entries = {name: ModelEntry.from_json(e) for name, e in body["models"].items()}
            for name, entry in entries.items():
                if name != entry.name:
                    raise ValueError(f"entry {name!r} names itself {entry.name!r}")
            return entries
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

    Raises :class:`InvalidModel` when onnxruntime cannot load it.
    """
    import onnxruntime as ort  # here, not at the top: the store itself is usable without it

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; the exception below says what failed
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        raise InvalidModel(f"onnxruntime cannot load this model: {type(exc).__name__}: {exc}") from None

    def spec(arg: Any) -> TensorSpec:
        return TensorSpec(arg.name, tuple(arg.shape), arg.type)

    return tuple(spec(a) for a in session.get_inputs()), tuple(spec(a) for a in session.get_outputs())


def _file_name(name: str, version: str) -> str:
    # "@" is not allowed in names or versions, so no two (name, version) pairs share a file
    return f"{name}@{version}.onnx"


def _short(sha: str | None) -> str:
    return f"{sha[:12]}…" if sha else "none"
