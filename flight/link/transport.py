"""Open a link by URL: the one place that knows which class serves which scheme.

The interface itself (:class:`FlightLink`, :class:`GroundLink`, URLs, counters) is in
:mod:`flight.link.interface`; the ZeroMQ and serial links implement it there, and this
module only chooses between them, so no link module imports the factory back.
"""

from __future__ import annotations

import dataclasses

from flight.link.definitions import LinkKind
from flight.link.interface import (
    CurveKeys,
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


def _with_curve(config: LinkConfig | str, curve: CurveKeys | None) -> LinkConfig:
    config = parse_link_url(config) if isinstance(config, str) else config
    if curve is not None and config.kind is LinkKind.ZMQ:  # serial links have no CURVE
        config = dataclasses.replace(config, curve=curve)
    return config


def open_flight_link(config: LinkConfig | str, curve: CurveKeys | None = None,
                     wait_for_device: bool = False) -> FlightLink:
    """The agent's end; ``curve``: its CURVE server keys and allow-list (flight.link.curve.server_keys);
    ``wait_for_device``: a serial device that does not open now is tried again, counted, not raised."""
    config = _with_curve(config, curve)
    if config.kind is LinkKind.ZMQ:
        return ZmqFlightLink(config)
    return SerialFlightLink(config, wait_for_device=wait_for_device)


def open_ground_link(config: LinkConfig | str, curve: CurveKeys | None = None,
                     wait_for_device: bool = False) -> GroundLink:
    """A ground end; ``curve``: the agent's public key and this end's keys (flight.link.curve.client_keys);
    ``wait_for_device`` as for :func:`open_flight_link`."""
    config = _with_curve(config, curve)
    if config.kind is LinkKind.ZMQ:
        return ZmqGroundLink(config)
    return SerialGroundLink(config, wait_for_device=wait_for_device)


__all__ = [
    "CurveKeys",
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
