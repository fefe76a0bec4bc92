"""What the operators' command lines share: argparse types that refuse bad values before anything
is asked, and text from elsewhere made safe for a terminal."""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable


def printable(text: Any) -> str:
    """Agent text for a terminal: control characters (an escape sequence in a mode name) as ``?``."""
    return "".join(c if c.isprintable() else "?" for c in str(text))


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


def seconds(text: str) -> float:
    """An argparse type: a time to wait, in seconds, above 0 and finite (-1 once waited no time at all,
    and the wait's end was blamed on the agent)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text} s: give a time above 0 and finite")
    return value
