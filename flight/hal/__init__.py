"""Hardware abstraction layer: the board's temperatures, power rails, load and power modes.

``open_board("jetson", options)`` on a Jetson, ``"linux"`` on any Linux PC, ``"sim"`` under
the HIL harness; each returns a :class:`Board`: the :class:`Hal` with its abilities. See
:mod:`flight.hal.base` for the interface and the rules backends keep.
"""

from flight.hal.base import (
    BACKENDS,
    Board,
    BoardOptions,
    EpsReading,
    Hal,
    HalError,
    HalReading,
    PowerMode,
    RailReading,
    open_board,
    register_backend,
)

__all__ = [
    "BACKENDS",
    "Board",
    "BoardOptions",
    "EpsReading",
    "Hal",
    "HalError",
    "HalReading",
    "PowerMode",
    "RailReading",
    "open_board",
    "register_backend",
]
