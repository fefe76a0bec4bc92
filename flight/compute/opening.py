"""Opening a session on a board: the one long native call, and what it leaves on disk.

On a Jetson, onnxruntime's TensorRT provider builds an engine for the model: seconds for a small
model, minutes for a large one, in one call into C++ that answers nothing. The worker makes that
call on a thread of its own and answers the agent's pings meanwhile, up to ``compute_open_s``
(``Worker._in_background``); this module holds what that needs and can be tested alone:

- :class:`OpenRecord`: each open, written down before the call and struck off after it
  (``opening.json``, checked JSON, written atomically). An open that never ends (the worker
  stopped at its limit, a crash inside the provider, the agent's watchdog, a power cut) stays
  written, and the next worker counts it. After :data:`UNFINISHED_LIMIT` such opens in a row of
  the same bytes on the same provider, that provider is skipped for those bytes, for good: a
  provider that cannot open a version would otherwise take down every worker that tries, and
  the board would never compute. Never the CPU, as nothing is left after it: its unfinished opens
  are said, and the agent's fault count takes it from there.
- :func:`warm_up_shapes`: onnxruntime's TensorRT provider builds the engine for a dynamic batch
  at the first run, and again for a batch outside the range built so far, inside a job's slice,
  where no ping is answered. The worker runs a new TensorRT session on these shapes within the
  open instead, so the range 1 to :data:`~flight.compute.protocol.MAX_BATCH` is built then.
- :func:`tensorrt_options` and :class:`EngineCache`: engines cached per version of the bytes
  opened, so TensorRT builds them once, not at every start. The engine files are the model's
  weights as TensorRT computes from them, written by onnxruntime, not through
  :mod:`flight.storage`, so a bit flipped in one on flash would be a weight flipped that no
  model hash sees. Once a session has opened and warmed up, the files are sealed (the SHA-256
  of each, in checked JSON); before an engine is reused they are checked against the seal, and a
  cache that fails (a file changed, missing or never sealed: a power cut while TensorRT wrote)
  is deleted and built again. At most :data:`KEEP_ENGINES` versions are kept.

Not checked here: the TensorRT and CUDA paths themselves, which need a GPU. The options are
onnxruntime's documented ``trt_engine_cache_enable`` and ``trt_engine_cache_path``; this
project's tests run everything else on the CPU provider.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flight.compute.providers import CPU
from flight.storage import CorruptFile, quarantine, read_checked_json, write_checked_json

RECORD_FILE = "opening.json"
UNFINISHED_LIMIT = 2
"""Opens of the same bytes on the same provider that did not end, in a row, before that provider is
skipped for them: one can be a power cut or the agent's restart; two in a row is the provider."""
MAX_SKIPS = 16
"""Versions whose skipped providers are kept (the oldest dropped first): bounded, and a version not
opened for that long is one the ground has replaced."""
KEEP_ENGINES = 4
"""TensorRT engine caches kept, the most recently sealed first: a model's active version, its
fallback, and two more; each is about the size of its model."""
SEAL_FILE = "sealed.json"
MAX_NAME = 200  # a model's or a provider's name in the record, at most
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Unfinished:
    """Opens of one version's bytes (their SHA-256) on one provider (the first tried) begun and not
    ended, ``tries`` of them in a row."""

    sha256: str
    model: str
    provider: str
    tries: int


class OpenRecord:
    """The worker's ``opening.json``: the opens begun and not ended, and the providers skipped per
    version, each list bounded (:data:`MAX_SKIPS`). ``on_corrupt(reason)`` is told where the file
    failed its check: it is moved aside and read as empty (every provider is tried again, as before
    the record was kept)."""

    def __init__(self, path: Path, on_corrupt: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._on_corrupt = on_corrupt or (lambda _reason: None)

    def _read(self) -> tuple[list[Unfinished], list[tuple[str, list[str]]]]:
        if not self.path.exists():
            return [], []
        try:
            body = read_checked_json(self.path)
            opens = [Unfinished(str(sha), str(model), str(provider), int(tries))
                     for sha, model, provider, tries in body["unfinished"]]
            skips = [(str(sha), [str(p) for p in providers]) for sha, providers in body["skip"]]
            names = [u.model for u in opens] + [u.provider for u in opens] + [p for _, ps in skips for p in ps]
            if any(not _SHA_RE.match(u.sha256) or u.tries < 1 for u in opens) \
                    or any(not _SHA_RE.match(sha) for sha, _ in skips) or any(len(n) > MAX_NAME for n in names):
                raise CorruptFile(f"{self.path.name}: an entry out of range")
            return opens[-MAX_SKIPS:], skips[-MAX_SKIPS:]
        except (CorruptFile, AttributeError, KeyError, TypeError, ValueError) as exc:
            quarantine(self.path)
            self._on_corrupt(str(exc).replace(str(self.path.parent), ".")[:200])
            return [], []

    def _write(self, opens: list[Unfinished], skips: list[tuple[str, list[str]]]) -> None:
        write_checked_json(self.path, {"unfinished": [[u.sha256, u.model, u.provider, u.tries] for u in opens[-MAX_SKIPS:]],
                                       "skip": [[sha, providers] for sha, providers in skips[-MAX_SKIPS:]]})

    def skipped(self, sha256: str) -> list[str]:
        """The providers skipped for the bytes of ``sha256``."""
        return next((providers for sha, providers in self._read()[1] if sha == sha256), [])

    def begin(self, sha256: str, model: str, provider: str) -> tuple[Unfinished | None, bool]:
        """Write down an open of ``sha256`` on ``provider`` (the first it will try) before it starts.
        Returns the opens of it left unfinished before (None if none), and whether ``provider`` is now
        skipped for these bytes (they reached :data:`UNFINISHED_LIMIT`; never the CPU): then nothing is
        begun, and the caller opens again without it."""
        opens, skips = self._read()
        before = next((u for u in opens if (u.sha256, u.provider) == (sha256, provider)), None)
        rest = [u for u in opens if u is not before]
        if before is not None and before.tries >= UNFINISHED_LIMIT and provider != CPU:
            providers = next((p for sha, p in skips if sha == sha256), [])
            skips = [(sha, p) for sha, p in skips if sha != sha256] + [(sha256, [*providers, provider])]
            self._write(rest, skips)
            return before, True
        self._write([*rest, Unfinished(sha256, model, provider, (before.tries if before else 0) + 1)], skips)
        return before, False

    def end(self, sha256: str, provider: str) -> None:
        """The open ended (opened, or refused by onnxruntime: either way the call came back)."""
        opens, skips = self._read()
        kept = [u for u in opens if (u.sha256, u.provider) != (sha256, provider)]
        if len(kept) != len(opens):
            self._write(kept, skips)


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


_WARM_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


def warm_up(session: Any, max_batch: int) -> int:
    """Run ``session`` on zeros of each of :func:`warm_up_shapes`; the number of runs made. None where
    the model has more than one input or one that is not floating point (its engines are then built
    at the first batches of a job), nor past a run that fails (the job's first batch says why)."""
    inputs = session.get_inputs()
    kind = _WARM_TYPES.get(inputs[0].type) if len(inputs) == 1 else None
    runs = 0
    for shape in warm_up_shapes(inputs[0].shape, max_batch) if kind is not None else []:
        try:
            session.run(None, {inputs[0].name: np.zeros(shape, kind)})
        except Exception:  # noqa: BLE001 - onnxruntime raises several kinds; the job's own run will say
            break
        runs += 1
    return runs


class EngineCache:
    """TensorRT engine caches under ``root``, one directory per version of the bytes opened (its
    SHA-256), each sealed once its session opened (:data:`SEAL_FILE`)."""

    def __init__(self, root: Path, keepalive: Callable[[], None] | None = None) -> None:
        self.root = root
        self._keepalive = keepalive or (lambda: None)

    def directory(self, sha256: str) -> Path:
        if not _SHA_RE.match(sha256):
            raise ValueError(f"not a SHA-256: {sha256[:80]!r}")
        return self.root / sha256

    def _digests(self, directory: Path) -> dict[str, str]:
        out = {}
        for path in sorted(directory.iterdir()):
            if path.name == SEAL_FILE or not path.is_file() or path.is_symlink():
                continue
            digest = hashlib.sha256()
            with path.open("rb") as f:
                while chunk := f.read(1 << 23):
                    digest.update(chunk)
                    self._keepalive()  # an engine of hundreds of MB: seconds of reading on a board
            out[path.name] = digest.hexdigest()
        return out

    def check(self, sha256: str) -> str | None:
        """Before TensorRT may reuse the cache of ``sha256``: None where it is absent, empty or matches
        its seal; else why not, the directory deleted (TensorRT builds the engine again)."""
        directory = self.directory(sha256)
        if not directory.is_dir():
            return None
        try:
            present = self._digests(directory)
            if not present and not (directory / SEAL_FILE).exists():
                return None
            sealed = read_checked_json(directory / SEAL_FILE) if (directory / SEAL_FILE).exists() else None
            if sealed is None:
                why = "engine files written but never sealed (the open that wrote them did not end)"
            elif not isinstance(sealed, dict) or sealed != present:
                changed = sorted(set(present) ^ set(sealed)) if isinstance(sealed, dict) else []
                changed += [n for n in present if isinstance(sealed, dict) and n in sealed and sealed[n] != present[n]]
                why = f"engine files differ from their seal ({', '.join(changed[:2]) or 'the seal is not a table'})"
            else:
                return None
        except (OSError, CorruptFile) as exc:
            why = f"unreadable ({type(exc).__name__}: {str(exc).replace(str(self.root), '.')[:120]})"
        self.wipe(sha256)
        return why

    def seal(self, sha256: str) -> None:
        """The session on ``sha256`` opened: seal what TensorRT wrote, and keep at most
        :data:`KEEP_ENGINES` caches (the oldest seals go first)."""
        directory = self.directory(sha256)
        if not directory.is_dir():
            return
        write_checked_json(directory / SEAL_FILE, self._digests(directory))
        sealed = sorted((d for d in self.root.iterdir() if d.is_dir() and (d / SEAL_FILE).exists()),
                        key=lambda d: (d / SEAL_FILE).stat().st_mtime, reverse=True)
        for old in sealed[KEEP_ENGINES:]:
            if old != directory:
                shutil.rmtree(old, ignore_errors=True)
        for stray in self.root.iterdir():  # caches never sealed, of other versions: opens that did not end
            if stray.is_dir() and stray != directory and not (stray / SEAL_FILE).exists():
                shutil.rmtree(stray, ignore_errors=True)

    def wipe(self, sha256: str) -> None:
        shutil.rmtree(self.directory(sha256), ignore_errors=True)
