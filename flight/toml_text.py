"""TOML text read one way everywhere: ``tomllib`` (``tomli`` on Python 3.10, JetPack 6), its parser's recursion
and a whole number past Python's digit limit (4300) said as TOML errors.

The parser recurses once per nested array or inline table, so a few kilobytes of ``[`` raised RecursionError
out of every reader of a configuration, scenario, campaign, schedule or sequence file (found in audit: a
traceback from ``sunlit-flight run``, an EXECUTION_ERROR from SEQUENCE_START). Through :func:`loads` it is a
:data:`TOMLDecodeError`, which each reader already says naming its file.
"""

from __future__ import annotations

import sys
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 on JetPack 6
    import tomli as tomllib

TOMLDecodeError = tomllib.TOMLDecodeError


def loads(text: str) -> dict[str, Any]:
    """``tomllib.loads``, with nesting past the interpreter's recursion limit a :data:`TOMLDecodeError`."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise TOMLDecodeError("arrays or tables nested too deeply") from None
    except TOMLDecodeError:
        raise
    except ValueError as exc:  # found in audit: a whole number past Python's digit limit raised out of every reader
        raise TOMLDecodeError(str(exc).split(';')[0]) from None


__all__ = ["TOMLDecodeError", "loads"]
