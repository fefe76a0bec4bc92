"""Command arguments that name a file on board, and the rule each is held to (SEC-006).

Every argument that becomes a path on board is confined to its directory: no absolute path,
no ``..``, no hidden name, no control character, no backslash, nothing longer than its rule.
The rules are the ones the owners already had, gathered here so that the handlers, a time tag
(``SCHEDULE_AT``/``SCHEDULE_AFTER`` check their command's arguments when they take it) and a
sequence step refuse exactly the same names:

- ``word``: an input set, a data set, a model: letters, digits, ``-`` and ``_`` (the compute
  supervisor's names: they become ``data/NAME.npz``, ``staging/NAME.*``, ``models/NAME@V.onnx``);
- ``component``: a model version: one plain file-name component
  (:func:`flight.files.filestore.check_name`, no ``/``);
- ``sequence``: a stored sequence's name: 1 to 32 letters, digits, ``_ . -``, starting with a
  letter or digit (``sequences/NAME.toml``);
- ``path``: a name in the file area (``products/job-3.json``):
  :func:`flight.files.filestore.check_name`;
- ``area``, ``directory``, ``sent``: the file manager's names (FILE_DELETE, FILE_LIST, FILE_DOWNLINK): ``path``
  under the top directories it takes (:data:`UPLINK_TOPS`, :data:`DOWNLINK_TOPS`); a directory may end in ``/``;
  a file sent is under a top (not one itself), at most :data:`MAX_NAME_DEPTH` deep (found in audit: a time tag
  of FILE_DOWNLINK ``models/cloud.onnx`` was taken, and refused at its release, out of contact).

This is the text alone (pure). Where a name meets the disk its owner resolves it with
:func:`flight.files.filestore.resolve`, so a symbolic link planted inside cannot lead out.
A refusal is :class:`~flight.files.filestore.NameRefused` whose text starts with the argument.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flight.files.filestore import MAX_DEPTH, NameRefused, check_file_name, check_name

WORD = "word"
COMPONENT = "component"
SEQUENCE = "sequence"
PATH = "path"
AREA = "area"
DIRECTORY = "directory"
SENT = "sent"

# The file area's top directories (flight/agent/files.py): the ground sends into these, the agent sends from those.
# "sequences" is the state directory's (flight/agent/schedule.py SEQUENCES_DIR), where SEQUENCE_START finds them.
UPLINK_TOPS = frozenset({"staging", "incoming", "data", "sequences"})
DOWNLINK_TOPS = frozenset({"products", "checkpoints", "logs"}) | UPLINK_TOPS
MAX_NAME_DEPTH = MAX_DEPTH - 1  # a file sent down lands in downlink/NAME on the ground

_WORD = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SEQUENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")

# command -> {argument: rule}. tests/test_path_escape.py checks that every string argument of
# the dictionary is either here or known not to name a file.
FILE_ARGUMENTS: dict[str, dict[str, str]] = {
    "INFER_START": {"input_set": WORD, "model": WORD},
    "TRAIN_START": {"dataset": WORD},
    "MODEL_INSTALL": {"name": WORD, "version": COMPONENT},
    "MODEL_ROLLBACK": {"name": WORD},
    "SEQUENCE_START": {"name": SEQUENCE},
    "FILE_DOWNLINK": {"name": SENT},
    "FILE_LIST": {"directory": DIRECTORY},
    "FILE_DELETE": {"name": AREA},
}


def check_value(rule: str, field: str, value: Any) -> str:
    """``value`` if it keeps to ``rule``; :class:`NameRefused` naming ``field`` otherwise."""
    shown = repr(value[:40] if isinstance(value, str) else value)
    if not isinstance(value, str):
        raise NameRefused(f"{field}: {shown} is not a name")
    if rule == WORD:
        if not _WORD.fullmatch(value):  # fullmatch: "$" would let a final newline through
            raise NameRefused(f"{field}: {shown}: names are letters, digits, - and _ (1 to 64), never paths")
    elif rule == SEQUENCE:
        if not _SEQUENCE.fullmatch(value):
            raise NameRefused(f"{field}: {shown} is not 1..32 letters, digits, '_', '.' or '-' starting with a "
                              "letter or digit")
    elif rule == COMPONENT:
        if "/" in value:
            raise NameRefused(f"{field}: {shown} is one name, never a path")
        check_name(value, None, field)
    elif rule == PATH:
        # A directory may end in '/'; the rest is filestore's rule (relative, plain components).
        check_name(value[:-1] if value.endswith("/") and len(value) > 1 else value, None, field)
    elif rule == DIRECTORY:  # as FILE_LIST reads it: "products/" is products
        check_name(value[:-1] if value.endswith("/") and len(value) > 1 else value, DOWNLINK_TOPS | UPLINK_TOPS, field)
    elif rule == AREA:
        check_name(value, DOWNLINK_TOPS | UPLINK_TOPS, field)
    elif rule == SENT:
        check_file_name(value, DOWNLINK_TOPS, field)
        if value.count("/") + 1 > MAX_NAME_DEPTH:
            raise NameRefused(f"{field}: {shown} is {value.count('/') + 1} levels deep, at most {MAX_NAME_DEPTH} "
                              "(the ground files it under downlink/)")
    else:
        raise ValueError(f"no file-name rule {rule!r}")
    return value


def check_file_arguments(command: str, args: Mapping[str, Any]) -> None:
    """Every file-naming argument of ``command`` in ``args`` checked; :class:`NameRefused` for the first bad one."""
    for field, rule in FILE_ARGUMENTS.get(command, {}).items():
        if field in args:
            check_value(rule, field, args[field])
