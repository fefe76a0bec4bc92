"""Files that must survive a power cut: written atomically, checked when read.

Write: temporary file in the same directory, fsync, rename over the old one, fsync the
directory — so a reader sees the old file or the new one, never half of either. Read:
every file carries a SHA-256 of its body; a mismatch is :class:`CorruptFile`, never a
silently wrong value.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

_MAGIC = "sunlit-checked-json/1"


class CorruptFile(ValueError):
    """A checked file failed its check; the message says which file and how."""


# An absolute path of two parts or more, not inside a URL (tcp://, ipc:///) or a relative path.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~/])/(?:[^\s/'\"()\[\]{},;:]+/)+([^\s/'\"()\[\]{},;:]+)")


def printable(text: str) -> str:
    """``text`` for a terminal with anything not printable escaped (``\\n``, ``\\x1b``): a message that quotes
    a damaged or hostile file forges no line and no escape sequence."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def redact_paths(text: str) -> str:
    """``text`` with every absolute path in it cut to its last part: what the board says to the
    ground (events, failure reasons) names a file, never where the board keeps it (SEC-006)."""
    return _ABSOLUTE_PATH.sub(r"\1", text) if "/" in text else text


def write_atomic(path: Path | str, data: bytes, *, sync_dir: bool = True, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` so that a power cut leaves the old file or the new one, never a part:
    a temp file beside it, fsync'd, renamed over it, and the directory fsync'd so the rename stays.
    ``sync_dir=False`` leaves the directory's fsync to the caller, who writes several files in it and
    syncs it once (:func:`fsync_path`). The file is the owner's alone (0600, as the temp file is made),
    or ``mode`` less the process's umask, as ``open`` would make it (a file others are meant to read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode & ~_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if sync_dir:
        fsync_path(path.parent)


def _umask() -> int:
    """The process's umask, read without changing it (os.umask sets it, for every thread); 022 where unknown."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def fsync_path(path: Path | str) -> None:
    """fsync a file or a directory (a directory: so a rename in it survives a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install_file(written: Path | str, final: Path | str) -> None:
    """Put a file written elsewhere (a download, a received file) in place as write_atomic
    does: fsync it, rename it over ``final``, fsync the directory."""
    final = Path(final)
    fsync_path(written)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(written, final)
    fsync_path(final.parent)


def write_checked_json(path: Path | str, body: Any) -> None:
    """Write ``body`` as JSON inside an envelope that carries its SHA-256."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    envelope = {"format": _MAGIC, "sha256": hashlib.sha256(text.encode()).hexdigest(), "body": text}
    write_atomic(path, (json.dumps(envelope, indent=1) + "\n").encode())


def read_checked_json(path: Path | str) -> Any:
    """Read what :func:`write_checked_json` wrote; raise CorruptFile if anything is off."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CorruptFile(f"{path}: cannot be read ({exc})") from None
    try:
        envelope = json.loads(raw)
        if envelope.get("format") != _MAGIC:
            raise CorruptFile(f"{path}: not a Sunlit checked file (format {envelope.get('format')!r})")
        text = envelope["body"]
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest != envelope["sha256"]:
            raise CorruptFile(f"{path}: SHA-256 mismatch (stored {envelope['sha256'][:12]}…, computed {digest[:12]}…)")
        return json.loads(text)
    except CorruptFile:
        raise
    except Exception as exc:  # noqa: BLE001 - json can also raise RecursionError on hostile nesting
        raise CorruptFile(f"{path}: unreadable ({type(exc).__name__}: {str(exc)[:100]})") from None


def quarantine(path: Path | str) -> Path | None:
    """Move a corrupt file aside (``NAME.corrupt``) so it can be inspected and is not read again.

    Best effort: if even that fails (read-only filesystem), the caller carries on with defaults.
    """
    path = Path(path)
    target = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, target)
    except OSError:
        return None
    return target


# write_atomic's temporary files: ".NAME." + mkstemp's 8 random characters + ".tmp".
_TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def remove_interrupted_writes(directory: Path | str, recursive: bool = False) -> list[Path]:
    """Delete what :func:`write_atomic` leaves when it is killed between writing and renaming.

    Call it at start, while holding the directory's lock (:class:`DirectoryLock`), so no
    write of this program can be in flight. Only names of that exact pattern are touched.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for path in directory.rglob(".*.tmp") if recursive else directory.glob(".*.tmp"):
        if _TEMP_RE.match(path.name) and path.is_file() and not path.is_symlink():
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass  # read-only or gone: nothing to clean then
    return removed


class DirectoryBusy(RuntimeError):
    """Another process holds the directory's lock; the message says which and what to do."""


class DirectoryLock:
    """An exclusive lock on a directory (``flock`` on ``DIR/NAME``), held until :meth:`release`.

    The kernel drops it when the process dies, kill -9 and power cut included, so a stale
    lock file never keeps a restarted agent out; the pid written in it is only for the
    message. The descriptor is not inherited by child processes (Python opens it
    close-on-exec), so a worker cannot keep its agent's lock alive.
    """

    def __init__(self, directory: Path | str, name: str, holder: str):
        self.path = Path(directory) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            writable = True
        except OSError as exc:
            # A filesystem remounted read-only (ext4 errors=remount-ro after eMMC faults): flock works on a
            # read-only descriptor, of the lock file or else of the directory, so the program still starts
            # and can say what is wrong (found in audit: it died here, and its SAFE unit with it, for good).
            # Two locks of one directory whose files are both missing share the directory's: they keep each
            # other out (the compute directory's supervisor and worker; no worker runs on a read-only one).
            if exc.errno != errno.EROFS:
                raise
            self._fd = os.open(self.path if self.path.exists() else self.path.parent, os.O_RDONLY)
            writable = False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                other = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            except OSError:  # the directory's own descriptor (a read-only filesystem with no lock file)
                other = "?"
            os.close(self._fd)
            self._fd = None
            raise DirectoryBusy(f"{Path(directory)} is in use by another {holder} (pid {other}); stop that one "
                                f"first, or give this one a directory of its own") from None
        if writable:
            try:  # the pid is only for another's message: a full disk must not keep this program out (found in
                # audit: a new lock file on a full state disk raised ENOSPC here, and the descriptor left open kept
                # the lock, so the next try in the same process was "in use by another agent")
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
            except OSError:
                pass

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


class ReadRefused(ValueError):
    """A file :func:`read_limited` would not read, and why (the message, without the file's name); ``kind``:
    ``type`` (not a regular file), ``limit`` (over its limit), ``size`` (not the size expected) or ``grew``."""

    def __init__(self, reason: str, kind: str):
        super().__init__(reason)
        self.kind = kind


def read_file_or_pipe(path: Path | str, limit_bytes: int) -> bytes:
    """The bytes of a regular file or of a pipe with a writer (``--config <(...)``, ``/dev/stdin``), at most
    ``limit_bytes``: a configuration or a schedule an operator may pipe in. Opened non-blocking, so a FIFO no process
    writes is refused (:class:`ReadRefused` ``empty``), never waited on; a pipe with a writer is read until it closes.
    A device or a socket is refused unread (``type``: ``/dev/zero`` read on until memory ran out), one longer than
    the limit too (``limit``); a directory is IsADirectoryError, as an open of it for reading would be."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise ReadRefused("not a file (a device or a socket)", "type")
        os.set_blocking(fd, True)  # a pipe with a writer is read to its end; with none yet, it reads as empty at once
        data = f.read(limit_bytes + 1)
    if not data and stat.S_ISFIFO(mode):
        raise ReadRefused("a pipe that gave nothing (no process writes to it yet, or it wrote nothing)", "empty")
    if len(data) > limit_bytes:
        raise ReadRefused(f"over {limit_bytes // 1024} KiB", "limit")
    return data


def read_limited(path: Path | str, limit_bytes: int, expected_bytes: int | None = None) -> tuple[bytes, os.stat_result]:
    """The bytes of the regular file at ``path`` and its status (of the file read, from its descriptor).

    Its size is looked at on the opened file before anything is read: over ``limit_bytes``, or not
    ``expected_bytes`` where given, it is refused unread (:class:`ReadRefused`); a FIFO or a device is
    refused too, never waited on (opened non-blocking). No more than its size and one byte are read, so
    a file that grows meanwhile (still being written) is refused rather than read on. OSError where it
    cannot be opened (FileNotFoundError: gone since it was listed)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ReadRefused("not a regular file (a FIFO, a device or a directory)", "type")
        if st.st_size > limit_bytes:
            raise ReadRefused(f"{st.st_size} bytes, over the limit of {limit_bytes} bytes; nothing of it was read",
                              "limit")
        if expected_bytes is not None and st.st_size != expected_bytes:
            raise ReadRefused(f"{st.st_size} bytes, not the {expected_bytes} expected; nothing of it was read", "size")
        with open(fd, "rb", closefd=False) as f:
            data = f.read(st.st_size + 1)
    finally:
        os.close(fd)
    if len(data) > st.st_size:
        raise ReadRefused(f"grew as it was read (from {st.st_size} bytes): it is still being written", "grew")
    return data, st
