"""The files a CFDP entity may touch: names confined to a root and a set of top directories.

A name arrives from the other end of the link (a Metadata PDU's destination, a FILE_LIST or
FILE_DELETE argument, a ground operator's ``file get``), so it is checked before it becomes a
path: relative, at most :data:`MAX_DEPTH` components, each a plain name (letters, digits,
``_.+-``; no ``..``, no hidden names, no separators other than ``/``), under one of the allowed
top directories, and, once resolved, still inside the root (a symbolic link cannot lead out).
A refusal is :class:`NameRefused`, a ``PermissionError`` so that cfdp-py answers it as a
filestore rejection.

Received files are never written at their final name: a transaction writes into its own
partial file (``.partial/`` under the root) and the entity moves it into place, after an fsync
and the checksum, only when the transfer is complete (:class:`ReceivingFilestore`).

A file sent is read from a snapshot taken when its transaction starts (a hard link under
``.partial/``, :meth:`ConfinedFilestore.snapshot`): a file its writer replaces atomically while
it goes (a running training job's checkpoint, every few steps) is sent as it was, whole, and its
SHA-256 and checksum are that version's (found in an audit: read again by name for each segment,
such a file failed its checksum on the ground at every try).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from cfdppy.filestore import NativeFilestore
from spacepackets.cfdp import ChecksumType

MAX_DEPTH = 4
MAX_NAME_LEN = 200
PARTIAL_DIR = ".partial"
SEND_SNAPSHOT = "send.snapshot"  # under PARTIAL_DIR: the file the current outgoing transaction sends
PART_CHARS = 128  # one part of a name (between '/'), at most
_PART = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.+-]{{0,{PART_CHARS - 1}}}$")


class NameRefused(PermissionError):
    """A file name outside what this entity allows; the text says which rule it broke."""


def check_name(name: str, tops: frozenset[str] | None, field: str = "name") -> str:
    """The confined relative name (``a/b.c``), or :class:`NameRefused` naming the rule."""
    if not isinstance(name, str) or not name:
        raise NameRefused(f"{field}: empty file name")
    if len(name) > MAX_NAME_LEN:
        raise NameRefused(f"{field}: {len(name)} characters, at most {MAX_NAME_LEN}")
    if name.startswith("/"):  # not echoed: the board's event texts cut an absolute path to its last part, and
        # "'passwd' must be a relative name" read as nonsense (found in audit); nor is a board path given away
        raise NameRefused(f"{field}: an absolute path is refused; it must be a relative name in the file area "
                          "(such as products/NAME)")
    if "\\" in name or "\x00" in name:
        raise NameRefused(f"{field}: {name!r} must be a relative name with '/' separators")
    parts = name.split("/")
    if len(parts) > MAX_DEPTH:
        raise NameRefused(f"{field}: {name!r} is {len(parts)} levels deep, at most {MAX_DEPTH}")
    for part in parts:
        if not _PART.fullmatch(part):  # fullmatch: "$" would let a final newline through
            raise NameRefused(f"{field}: {name!r}: component {part!r} is not a plain name "
                              "(letters, digits, _ . + -, not starting with . or -)")
    if tops is not None and parts[0] not in tops:
        raise NameRefused(f"{field}: {name!r} is not under {', '.join(sorted(tops)) or 'any directory'}")
    return "/".join(parts)


def check_file_name(name: str, tops: frozenset[str], field: str = "name") -> str:
    """:func:`check_name` for a file sent or received: one of ``tops`` itself is a directory, not a file
    under it (a put to ``data`` once made the board's data/ a file, and every later upload there failed)."""
    rel = check_name(name, tops, field)
    if "/" not in rel:
        raise NameRefused(f"{field}: {rel!r} is a directory; name a file under it ({rel}/NAME)")
    return rel


def resolve(root: Path, name: str, tops: frozenset[str] | None, field: str = "name",
            roots: Mapping[str, Path] | None = None) -> Path:
    """``root/name`` after :func:`check_name`, refused if links lead it outside ``root`` or, for a
    name in a directory, outside that directory (a link under ``products/`` to a model or to
    ``jobs.json`` stays in the file area, but not where the name may reach). ``roots``: top directories
    kept under another directory than ``root`` (the agent's ``sequences/``, in its state directory), each
    confined there as the others are in ``root``."""
    rel = check_name(name, tops, field)
    if roots:
        root = Path(roots.get(rel.partition("/")[0], root))
    path = root / rel
    real = os.path.realpath(path)
    top, _, rest = rel.partition("/")
    area = os.path.realpath(root)
    bases = [(area, "the file area")]
    if rest or (tops is not None and top in tops):
        # The top directory itself where it should be: one that is a link (logs -> ., products -> models) leads
        # elsewhere in the area, and everything under it with it (found in audit: FILE_LIST listed the model
        # store through it, FILE_DELETE deleted its manifest, the automatic downlink sent it)
        if os.path.realpath(root / top) != os.path.join(area, top):
            raise NameRefused(f"{field}: {name!r}: {top}/ is not the file area's own directory (a link)")
    if rest:
        bases.append((os.path.join(area, top), f"{top}/"))
    for base, what in bases:
        if os.path.commonpath([base, real]) != base:
            raise NameRefused(f"{field}: {name!r} leads outside {what}")
    return path


def _read(path: Path, offset: int | None, read_len: int | None) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset or 0)
        return f.read() if read_len is None else f.read(read_len)


class ConfinedFilestore(NativeFilestore):
    """cfdp-py's filestore over ``root``: every path it is given is a confined name (read for
    what we send: ``read_tops``)."""

    def __init__(self, root: Path, read_tops: frozenset[str] | None, roots: Mapping[str, Path] | None = None):
        super().__init__()
        self.root = Path(root)
        self.read_tops = read_tops
        self.roots = roots  # top directories kept elsewhere (:func:`resolve`)
        self._snapshot: tuple[str, Path] | None = None  # (the name sent, its snapshot)
        self._held_size: tuple[str, int] | None = None  # (the name sent, its size when the snapshot was taken)

    def snapshot(self, name: str) -> Path:
        """Hold ``name`` as it is now for the transaction that sends it (a hard link: the version a writer's
        atomic replace unlinks stays readable); what is read of ``name`` from now on is that version, until
        :meth:`release`. Where no hard link can be made (another file system), the name is read as it is.
        Its size is held too (:meth:`file_size`): a file appended to as it goes (a log) is sent as long as
        it was, so the SHA-256 taken now covers what goes (a hard link shares what is appended)."""
        self.release()
        path = resolve(self.root, name, self.read_tops, "source", self.roots)
        snap = self.root / PARTIAL_DIR / SEND_SNAPSHOT
        try:
            snap.parent.mkdir(exist_ok=True)
            snap.unlink(missing_ok=True)
            os.link(path, snap, follow_symlinks=True)
        except OSError:
            snap = path
        else:
            self._snapshot = (name, snap)
        self._held_size = (name, snap.stat().st_size)
        return snap

    def release(self) -> None:
        """Let the snapshot go (the transaction ended, or another starts)."""
        if self._snapshot is not None:
            self._snapshot[1].unlink(missing_ok=True)
            self._snapshot = None
        self._held_size = None

    def _path(self, file: Path) -> Path:
        name = str(file).replace(os.sep, "/")
        if self._snapshot is not None and name == self._snapshot[0]:
            return self._snapshot[1]
        return resolve(self.root, name, self.read_tops, roots=self.roots)

    def read_data(self, file: Path, offset: int | None, read_len: int | None = None) -> bytes:
        return _read(self._path(file), offset, read_len)

    def file_size(self, file: Path) -> int:
        path = self._path(file)
        if self._held_size is not None and str(file).replace(os.sep, "/") == self._held_size[0]:
            return self._held_size[1]
        return path.stat().st_size

    def file_exists(self, path: Path) -> bool:
        try:
            return super().file_exists(self._path(path))
        except NameRefused:
            return False

    def is_directory(self, path: Path) -> bool:
        return False

    def calculate_checksum(self, checksum_type: ChecksumType, file_path: Path, size_to_verify: int,
                           segment_len: int = 4096) -> bytes:
        return super().calculate_checksum(checksum_type, self._path(file_path), size_to_verify, segment_len)

    # Nothing we send is written, created or deleted by the protocol.
    def truncate_file(self, file: Path) -> None:
        raise NameRefused("the sending side writes nothing")

    def write_data(self, file: Path, data: bytes, offset: int | None) -> None:
        raise NameRefused("the sending side writes nothing")

    def create_file(self, file: Path):
        raise NameRefused("the sending side creates nothing")

    def delete_file(self, file: Path):
        raise NameRefused("the sending side deletes nothing")


class ReceivingFilestore(NativeFilestore):
    """One incoming transaction's view: its destination name (checked against ``write_tops``)
    stands for its partial file, which is all it may write."""

    def __init__(self, root: Path, write_tops: frozenset[str] | None, partial: Path,
                 roots: Mapping[str, Path] | None = None):
        super().__init__()
        self.root = Path(root)
        self.write_tops = write_tops
        self.roots = roots  # top directories kept elsewhere (:func:`resolve`)
        self.partial = partial
        self.dest_name: str | None = None
        self.refusal: str | None = None
        self.refuse: str | None = None   # set before the first write: every write is refused with it

    def _path(self, file: Path) -> Path:
        name = str(file).replace(os.sep, "/")
        if self.refuse is not None:
            self.refusal = self.refuse
            raise NameRefused(self.refuse)
        if self.dest_name is None:
            try:
                check_file_name(name, self.write_tops, "destination")
                resolve(self.root, name, self.write_tops, "destination", self.roots)
            except NameRefused as exc:
                self.refusal = str(exc)
                raise
            self.dest_name = name
        elif name != self.dest_name:
            raise NameRefused(f"destination: {name!r} is not this transaction's file {self.dest_name!r}")
        return self.partial

    def is_directory(self, path: Path) -> bool:
        self._path(path)
        return False

    def file_exists(self, path: Path) -> bool:
        return super().file_exists(self._path(path))

    def truncate_file(self, file: Path) -> None:
        super().truncate_file(self._path(file))

    def create_file(self, file: Path):
        path = self._path(file)
        path.parent.mkdir(parents=True, exist_ok=True)
        return super().create_file(path)

    def write_data(self, file: Path, data: bytes, offset: int | None) -> None:
        super().write_data(self._path(file), data, offset)

    def read_data(self, file: Path, offset: int | None, read_len: int | None = None) -> bytes:
        return _read(self._path(file), offset, read_len)

    def file_size(self, file: Path) -> int:
        return self._path(file).stat().st_size

    def delete_file(self, file: Path):
        """Discarding a cancelled transaction's data: its partial file, whatever name it came with."""
        return super().delete_file(self.partial)

    def calculate_checksum(self, checksum_type: ChecksumType, file_path: Path, size_to_verify: int,
                           segment_len: int = 4096) -> bytes:
        return super().calculate_checksum(checksum_type, self._path(file_path), size_to_verify, segment_len)
