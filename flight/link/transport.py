"""Open a link by URL: the one place that knows which class serves which scheme.

The interface itself (:class:`FlightLink`, :class:`GroundLink`, URLs, counters) is in
:mod:`flight.link.interface`; the ZeroMQ and serial links implement it there, and this
module only chooses between them, so no link module imports the factory back.
"""

from __future__ import annotations

from flight.link.definitions import LinkKind
from flight.link.interface import (
    FlightLink,
    GroundLink,
    Inbound,
    LinkConfig,
    LinkConfigError,
    LinkStats,
    parse_link_url,
)
from flight.link.serial_link import SerialFlightLink, SerialGroundLink
from flight.link.zmq_link import ZmqFlightLink, ZmqGroundLink


def open_flight_link(config: LinkConfig | str) -> FlightLink:
    config = parse_link_url(config) if isinstance(config, str) else config
    if config.kind is LinkKind.ZMQ:
        return ZmqFlightLink(config)
    return SerialFlightLink(config)


def open_ground_link(config: LinkConfig | str) -> GroundLink:
    config = parse_link_url(config) if isinstance(config, str) else config
    if config.kind is LinkKind.ZMQ:
        return ZmqGroundLink(config)
    return SerialGroundLink(config)


__all__ = [
    "FlightLink",
    "GroundLink",
    "Inbound",
    "LinkConfig",
    "LinkConfigError",
    "LinkStats",
    "open_flight_link",
    "open_ground_link",
    "parse_link_url",
]
