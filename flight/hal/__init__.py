"""Hardware abstraction layer: the board's temperatures, power rails, load and power modes.

``open_hal("jetson")`` on a Jetson, ``open_hal("linux")`` on any Linux PC; both return a
:class:`Hal`. See :mod:`flight.hal.base` for the interface and the rules backends keep.
"""

from flight.hal.base import (
    BACKENDS,
    Hal,
    HalError,
    HalReading,
    PowerMode,
    RailReading,
    open_hal,
    register_backend,
)

__all__ = [
    "BACKENDS",
    "Hal",
    "HalError",
    "HalReading",
    "PowerMode",
    "RailReading",
    "open_hal",
    "register_backend",
]
