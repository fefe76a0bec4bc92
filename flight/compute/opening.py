"""Opening a session on a board: the one long native call, and what it leaves on disk.

On a Jetson, onnxruntime's TensorRT provider builds an engine for the model: seconds for a small
model, minutes for a large one, in one call into C++ that answers nothing and cannot be cancelled.
The worker makes that call on a thread of its own and answers the agent's pings meanwhile, up to
``compute_open_s``; past it, or told to stop, or (opening for a job) with nothing admitted, it
exits, as nothing else ends the call (``Worker._in_background``). This module holds what that needs and can be tested
alone:

- :class:`OpenRecord`: each provider's attempt to open a version's bytes, written down before it
  begins and struck off when it returns (``opening.json``, checked JSON, written atomically). An
  attempt that never returns (the worker stopped at its limit, a crash inside the provider, a
  power cut) stays written, and the next worker counts it; one given up on purpose (the worker told
  to stop, or nothing admitted) is withdrawn, as it says nothing of the provider. After
  :data:`UNFINISHED_LIMIT` in a row on one provider, that provider is skipped for those bytes from
  then on (kept for the :data:`MAX_SKIPS` versions last skipped): a provider that cannot open a
  version would otherwise take down every worker that tries, and the board would never compute.
  The CPU too, last: then the version is not opened at all, and its jobs fail saying so (a version
  on probation is rolled back), where the worker would otherwise hang on it for ``compute_open_s``
  at every start.
- :func:`warm_up_plan`, :func:`warm_up`: onnxruntime's TensorRT provider builds the engine for a
  dynamic batch at the first run, and again for a batch outside the range built so far, inside a
  job's slice, where no ping is answered. The worker runs a new TensorRT session over batches of 1
  and :data:`~flight.compute.protocol.MAX_BATCH` within the open instead, so that the range a job
  needs is built then.
- :func:`tensorrt_options` and :class:`EngineCache`: engines cached per version of the bytes
  opened, so TensorRT builds them once, not at every start; only for a model the warm-up covers
  (else TensorRT would write engines into the cache after it was sealed). The engine files are the
  model's weights as TensorRT computes from them, written by onnxruntime, not through
  :mod:`flight.storage`, so a bit flipped in one on flash would be a weight flipped that no model
  hash sees. Once a session has opened and warmed up, the files are sealed (the SHA-256 of each, in
  checked JSON), and sealed again after a slice in which TensorRT wrote to them (an engine built at
  a run for a batch past the warm-up's); before an engine is used again they are checked against the
  seal, and a cache that fails (a file changed, missing, added or not a plain file) is deleted and
  built again, or not used where it cannot be deleted. One never sealed (an open that did not end)
  is deleted too, unsaid. At most :data:`KEEP_ENGINES` versions are kept, the most recently used.

Not checked here: the TensorRT and CUDA paths themselves, which need a GPU. The options are
onnxruntime's documented ``trt_engine_cache_enable`` and ``trt_engine_cache_path``; this
project's tests run everything else on the CPU provider and onnxruntime's Azure provider.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from flight.compute.providers import CPU
from flight.storage import CorruptFile, quarantine, read_checked_json, write_checked_json

RECORD_FILE = "opening.json"
UNFINISHED_LIMIT = 2
"""Attempts on one provider to open the same bytes that never returned, in a row, before that provider is
skipped for them: one can be a power cut; two in a row is the provider (or the model)."""
MAX_SKIPS = 16
"""Versions whose skipped providers are kept, and attempts left unfinished (the oldest dropped first):
bounded; a version not opened for that long is one the ground has replaced."""
MAX_TRIES = 1_000_000  # more in a record is not a count this worker wrote
KEEP_ENGINES = 4
"""TensorRT engine caches kept, the most recently used first: a model's active version, its fallback,
and two more; each is about the size of its model."""
SEAL_FILE = "sealed.json"
MAX_NAME = 200  # a provider's name in the record, at most
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class OpenRecord:
    """The worker's ``opening.json``: the attempts to open a version's bytes (their SHA-256) on a provider
    that began and never returned, counted in a row, and the providers skipped per version, both bounded
    (:data:`MAX_SKIPS`). Read once, when the worker starts, and written through on each change (the
    worker is its only writer; a lock keeps the open's thread and the worker's apart). ``on_corrupt``
    is told, once, where the file failed its check: ``(reason, moved)``, ``moved`` whether it could be
    moved aside (as ``opening.json.corrupt``); it is then read as empty, every provider tried again."""

    def __init__(self, path: Path, on_corrupt: Callable[[str, bool], None] | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._tries: dict[tuple[str, str], int] = {}  # (sha256, provider) -> attempts in a row never returned
        self._skips: dict[str, list[str]] = {}  # sha256 -> providers skipped for those bytes
        if path.exists():
            try:
                self._tries, self._skips = self._parse(read_checked_json(path))
            except (CorruptFile, ArithmeticError, AttributeError, KeyError, TypeError, ValueError) as exc:
                moved = quarantine(path) is not None
                (on_corrupt or (lambda _reason, _moved: None))(str(exc).replace(str(path.parent), ".")[:200], moved)

    def _parse(self, body: Any) -> tuple[dict[tuple[str, str], int], dict[str, list[str]]]:
        tries = {(str(sha), str(provider)): int(n) for sha, provider, n in body["unfinished"]}
        skips = {str(sha): [str(p) for p in providers] for sha, providers in body["skip"]}
        names = [p for _, p in tries] + [p for ps in skips.values() for p in ps]
        if any(not _SHA_RE.match(sha) or not 1 <= n <= MAX_TRIES for (sha, _), n in tries.items()) \
                or any(not _SHA_RE.match(sha) for sha in skips) or any(len(n) > MAX_NAME for n in names):
            raise CorruptFile(f"{self.path.name}: an entry out of range")
        return dict(list(tries.items())[-MAX_SKIPS:]), dict(list(skips.items())[-MAX_SKIPS:])

    def _save(self) -> None:
        """Written through; where the disk refuses (OSError, raised), the file is removed rather than
        left saying what is no longer so (an attempt that did return would count against its provider
        at the next start); what this worker knows stays right in memory."""
        for table in (self._tries, self._skips):
            while len(table) > MAX_SKIPS:
                del table[next(iter(table))]
        try:
            write_checked_json(self.path, {"unfinished": [[sha, p, n] for (sha, p), n in self._tries.items()],
                                           "skip": [[sha, ps] for sha, ps in self._skips.items()]})
        except OSError:
            try:
                self.path.unlink()
            except OSError:
                pass
            raise

    def skipped(self, sha256: str) -> list[str]:
        """The providers skipped for the bytes of ``sha256``."""
        with self._lock:
            return list(self._skips.get(sha256, []))

    def unfinished(self, sha256: str) -> dict[str, int]:
        """Per provider, the attempts to open ``sha256`` on it that began and never returned, in a row."""
        with self._lock:
            return {p: n for (sha, p), n in self._tries.items() if sha == sha256}

    def skip(self, sha256: str, provider: str) -> None:
        """``provider`` is not tried again for ``sha256``; its count is done with."""
        with self._lock:
            self._tries.pop((sha256, provider), None)
            skips = self._skips.pop(sha256, [])
            self._skips[sha256] = [*skips, provider] if provider not in skips else skips
            self._save()

    def begin(self, sha256: str, provider: str) -> int:
        """An attempt to open ``sha256`` on ``provider`` begins: counted, and written down before it does.
        Returns the attempts in a row, this one included."""
        with self._lock:
            tries = self._tries.pop((sha256, provider), 0) + 1
            self._tries[(sha256, provider)] = tries
            self._save()
            return tries

    def withdraw(self, sha256: str, provider: str) -> None:
        """The attempt under way is given up on purpose (the worker told to stop, or nothing admitted): it
        says nothing of the provider, so the count goes back to what it was before it began."""
        with self._lock:
            tries = self._tries.pop((sha256, provider), 0) - 1
            if tries > 0:
                self._tries[(sha256, provider)] = tries
            self._save()

    def end(self, sha256: str, provider: str) -> None:
        """The attempt returned (opened, or refused by onnxruntime): the count in a row starts again."""
        with self._lock:
            if self._tries.pop((sha256, provider), None) is not None:
                self._save()


def tensorrt_options(cache_dir: Path) -> dict[str, str]:
    """TensorRT's options for one version of a model: its engines cached in ``cache_dir``, a directory
    of its own (onnxruntime names an engine after the graph's structure, not its weights: a new
    version of the same graph in a shared directory would run on the old version's engine)."""
    return {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache_dir)}


def warm_up_shapes(shape: Sequence[int | str | None], max_batch: int) -> list[list[int]]:
    """The input shapes to run a new TensorRT session on while it opens, so that the engines a job's
    batches need are built then, inside the call the worker waits on, and not at a job's first batch
    (onnxruntime's TensorRT provider builds an engine for a dynamic batch at the first run, and again
    for a batch outside the range built so far): 1, then ``max_batch``, which leaves the range 1 to
    ``max_batch``. Empty where a dimension past the batch is unknown (the engine is then built at the
    first run of each new shape, in a job's slice)."""
    if not shape or any(not (isinstance(d, int) and d > 0) for d in shape[1:]):
        return []
    rest = [int(d) for d in shape[1:]]
    if isinstance(shape[0], int) and shape[0] > 0:
        return [[shape[0], *rest]]
    return [[1, *rest], [max_batch, *rest]]


_WARM_TYPES = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64, TensorProto.FLOAT16: np.float16}


def warm_up_plan(data: bytes, max_batch: int) -> tuple[str, Any, list[list[int]]] | None:
    """For the model ``data``: its one input's name and numpy type, and :func:`warm_up_shapes` of its
    shape; None where the model has more than one input, one that is not floating point, or a size past
    the batch that is not fixed: its engines are then built at the first batches of a job (in a slice,
    where no ping is answered), and TensorRT is given no cache to write them into after the seal."""
    graph = onnx.load_from_string(data).graph
    constants = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type not in _WARM_TYPES:
        return None
    dims = inputs[0].type.tensor_type.shape.dim
    shapes = warm_up_shapes([d.dim_value if d.HasField("dim_value") else None for d in dims], max_batch)
    return (inputs[0].name, _WARM_TYPES[inputs[0].type.tensor_type.elem_type], shapes) if shapes else None


def warm_up(session: Any, plan: tuple[str, Any, list[list[int]]]) -> bool:
    """Run ``session`` on zeros of each shape of ``plan`` (:func:`warm_up_plan`); whether every run went
    (one that fails stops it: the job's first batch says why)."""
    name, kind, shapes = plan
    for shape in shapes:
        try:
            session.run(None, {name: np.zeros(shape, kind)})
        except Exception:  # noqa: BLE001 - onnxruntime raises several kinds; the job's own run will say
            return False
    return True


class Undeletable(OSError):
    """A cache that failed its check (``why``) and could not be deleted: it must not be used."""

    def __init__(self, why: str, directory: Path) -> None:
        super().__init__(f"{directory.name[:16]}…: could not be deleted ({why})")
        self.why = why


class EngineCache:
    """TensorRT engine caches under ``root`` (the worker checks that it is a directory of its own, not a
    link out of it), one directory per version of the bytes opened, named by their SHA-256, each sealed
    once its session opened and warmed up (:data:`SEAL_FILE`)."""

    def __init__(self, root: Path, keepalive: Callable[[], None] | None = None) -> None:
        self.root = root
        self._keepalive = keepalive or (lambda: None)
        self._listed: dict[str, dict[str, tuple[int, int]]] = {}  # sha256 -> its files' (size, mtime) as sealed
        self._sealed: dict[str, dict[str, str]] = {}  # sha256 -> its files' SHA-256 as sealed or checked

    def _listing(self, directory: Path) -> dict[str, tuple[int, int]]:
        return {p.name: (st.st_size, st.st_mtime_ns) for p in directory.iterdir() if p.name != SEAL_FILE
                for st in [p.lstat()]}

    def directory(self, sha256: str) -> Path:
        if not _SHA_RE.match(sha256):
            raise ValueError(f"not a SHA-256: {sha256[:80]!r}")
        return self.root / sha256

    def _digests(self, directory: Path, kept: dict[str, str] | None = None) -> dict[str, str]:
        """The SHA-256 of each file in ``directory`` but the seal (those of ``kept`` as given); CorruptFile
        for anything there that is not a plain file (a link, a directory: nothing the seal could vouch for)."""
        out = {}
        for path in sorted(directory.iterdir()):
            if path.name == SEAL_FILE:
                continue
            if path.is_symlink() or not path.is_file():
                raise CorruptFile(f"{path.name}: not a plain file")
            if kept and path.name in kept:
                out[path.name] = kept[path.name]
                continue
            digest = hashlib.sha256()
            with path.open("rb") as f:
                while chunk := f.read(1 << 23):
                    digest.update(chunk)
                    self._keepalive()  # an engine of hundreds of MB: seconds of reading on a board
            out[path.name] = digest.hexdigest()
        return out

    def check(self, sha256: str) -> str | None:
        """Before TensorRT may use the cache of ``sha256``: None where there is none yet, or it matches its
        seal (then marked as used now, for :data:`KEEP_ENGINES`), or it was never sealed (an open that did
        not end, given up on purpose or not: deleted, as nothing vouches for it, but no fault of the files);
        else why not (a file changed, missing, added or not a plain file, a seal unreadable), the cache
        deleted so that TensorRT builds it again. :class:`Undeletable` where it cannot be deleted: it must
        not be used."""
        directory = self.directory(sha256)
        if not directory.exists() and not directory.is_symlink():
            return None
        seal = directory / SEAL_FILE
        quiet = False  # never sealed: deleted, not said
        try:
            if directory.is_symlink() or not directory.is_dir():
                raise CorruptFile("not a directory of its own")
            if not seal.exists():
                if not any(directory.iterdir()):
                    return None  # made for an open that wrote nothing yet
                quiet, why = True, "engine files never sealed (an open that did not end)"
            else:
                present = self._digests(directory)
                sealed = read_checked_json(seal)
                if not isinstance(sealed, dict):
                    why = "its seal is not a table of files"
                elif sealed != present:
                    changed = sorted(set(present) ^ set(sealed))
                    changed += [n for n in present if sealed.get(n, present[n]) != present[n]]
                    why = f"engine files differ from their seal ({', '.join(changed[:2])})"
                else:
                    os.utime(seal)
                    self._listed[sha256], self._sealed[sha256] = self._listing(directory), present
                    return None
        except (OSError, CorruptFile) as exc:
            why = f"unreadable ({str(exc).replace(str(self.root), '.')[:120]})"
        try:
            self.wipe(sha256)
        except OSError:
            raise Undeletable(why, directory) from None
        return None if quiet else why

    def seal(self, sha256: str, kept: dict[str, str] | None = None) -> None:
        """The session on ``sha256`` opened and warmed up: seal what TensorRT wrote. Then keep at most
        :data:`KEEP_ENGINES` caches, the most recently used (sealed or checked), and none unsealed but
        this one's (opens that did not end). Only directories named as this class names them are
        touched. ``kept``: the digests of files unchanged since the last seal, taken as they were sealed
        (:meth:`reseal_if_changed`), not read again."""
        directory = self.directory(sha256)
        if directory.is_symlink() or not directory.is_dir():
            return
        digests = self._digests(directory, kept or {})
        write_checked_json(directory / SEAL_FILE, digests)
        self._listed[sha256], self._sealed[sha256] = self._listing(directory), digests
        caches = [d for d in self.root.iterdir() if _SHA_RE.match(d.name) and d.is_dir() and not d.is_symlink()]
        sealed = sorted((d for d in caches if (d / SEAL_FILE).exists()),
                        key=lambda d: (d == directory, (d / SEAL_FILE).stat().st_mtime), reverse=True)
        for old in [*sealed[KEEP_ENGINES:], *(d for d in caches if not (d / SEAL_FILE).exists())]:
            if old != directory:
                shutil.rmtree(old, ignore_errors=True)

    def reseal_if_changed(self, sha256: str) -> bool:
        """Seal the cache of ``sha256`` again where TensorRT has written to it since it was sealed or checked
        (an engine built at a run, for a batch past the warm-up's: a continuous job's file of hundreds of
        tiles), so that the next open finds it as sealed and not as corrupt; whether it did. Cheap where
        nothing changed: a listing, sizes and times. Only the files new or changed since are read: one
        that is not keeps the digest it was sealed with, so a bit flipped in it on flash (which changes
        neither its size nor its time) is still found at the next check (found in review: it was sealed
        again as it stood)."""
        directory = self.directory(sha256)
        if sha256 not in self._listed or directory.is_symlink() or not directory.is_dir():
            return False
        now, before = self._listing(directory), self._listed[sha256]
        if now == before:
            return False
        sealed = self._sealed.get(sha256, {})
        self.seal(sha256, {n: d for n, d in sealed.items() if n in now and now[n] == before.get(n)})
        return True

    def wipe(self, sha256: str) -> None:
        """Delete the cache of ``sha256``; OSError where it is still there after."""
        directory = self.directory(sha256)
        if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
            directory.unlink()
        else:
            shutil.rmtree(directory, ignore_errors=True)
        self._listed.pop(sha256, None)
        self._sealed.pop(sha256, None)
        if directory.exists() or directory.is_symlink():
            raise OSError(f"{directory.name[:16]}…: could not be deleted")
