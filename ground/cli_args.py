"""What the operators' command lines share: argparse types that refuse bad values before anything
is asked, text from elsewhere made safe for a terminal, and outputs put in place whole, never over
a file already there unless asked to (``--force``)."""

from __future__ import annotations

import argparse
import errno
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from flight.storage import fsync_path, install_file


def printable(text: Any) -> str:
    """Agent text for a terminal: control characters (an escape sequence in a mode name) as ``?``."""
    return "".join(c if c.isprintable() else "?" for c in str(text))


def named(name: str, exc: BaseException) -> str:
    """A command's failure said once with its name: a timeout's or a lost command's message names its command
    already (found in audit: "PING: PING: outcome unknown ...")."""
    text = str(exc)
    return text if text.startswith(f"{name}:") else f"{name}: {text}"


def count(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``, refused before anything is asked."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not from {low} to {high}")
        return value
    return parse


def positive_number(text: str, noun: str, shown: str, want: str, *, zero: bool = False) -> float:
    """``text`` as a finite number above 0 (0 or more with ``zero``; never NaN), or argparse's error: ``noun``
    says what it is not ("a number of seconds"), ``shown`` how it is shown back ("{} s"), ``want`` what to give."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
    if not ((0 <= value) if zero else (0 < value)) or not value < math.inf:
        raise argparse.ArgumentTypeError(f"{shown.format(text)}: give {want}")
    return value


def seconds(text: str) -> float:
    """An argparse type: a time to wait, in seconds, above 0 and finite (-1 once waited no time at all,
    and the wait's end was blamed on the agent)."""
    return positive_number(text, "a number of seconds", "{} s", "a time above 0 and finite")


_TEMP_NAME_BYTES = 200  # of the output's name in its temporary file's: 255 (NAME_MAX) less ".", ".XXXXXXXX.part"


def temp_beside(final: Path | str) -> Path:
    """A new empty file beside ``final`` to write an output into before it goes in place (``.NAME.XXXX.part``: a
    name of its own, so two commands writing one output never write into one file), with the mode the user's
    umask gives a new file (mkstemp's own is 600; an output is for sharing). A long name is cut in it: the 15
    characters around it took a legal name of 241 bytes or more past the file system's 255 (found in audit:
    "File name too long" of a name that was not)."""
    final = Path(final)
    name = final.name
    while len(os.fsencode(name)) > _TEMP_NAME_BYTES:
        name = name[:-1]
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=final.parent)
    try:
        umask = os.umask(0o022)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
    finally:
        os.close(fd)
    return Path(tmp)


def install_output(written: Path | str, final: Path | str, replace: bool = False) -> None:
    """Put ``written`` (beside ``final``) in its place whole: synced, renamed, its folder synced. Unless
    ``replace``, never over a name already there, a file made while the output was written included (a check
    before writing leaves a whole downlink's time for one to appear; found in audit): a hard link, which an
    existing name refuses (FileExistsError, ``written`` left for the caller), where the file system has them."""
    written, final = Path(written), Path(final)
    if replace:
        install_file(written, final)
        return
    fsync_path(written)
    try:
        os.link(written, final)
    except FileExistsError:
        raise
    except OSError as exc:  # a file system without hard links (FAT, some network ones): looked at, then renamed
        # ENOSYS: a FUSE file system without link (libfuse's answer, passed on by the 5.15 kernels of JetPack 6 and
        # Ubuntu 22.04: found in review)
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
            raise
        if os.path.lexists(final):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(final)) from None
        os.replace(written, final)
    else:
        os.unlink(written)
    fsync_path(final.parent)
