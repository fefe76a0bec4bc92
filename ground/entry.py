"""``sunlit-ground`` and ``python -m ground``: ground.cli loaded under its Ctrl-C guard (flight/entry.py).

No ``from __future__`` import, and nothing but flight.entry (stdlib only): a module loaded before
the guard is a moment a Ctrl-C would end in a traceback."""

from flight.entry import launch


def main() -> int:
    """Exit 1 at a Ctrl-C while the modules load, as ground.cli ends one anywhere else."""
    return launch("ground.cli:main", "sunlit-ground", interrupted=1)
