"""Housekeeping: every HK packet built from the components that own its channels, checked.

Each component produces exactly the channels it declares; this packetizer asks each once per
period, checks the keys (a missing or extra key is :class:`TelemetryError`: a bug found in the
first test, never a nil on the wire), and sends each packet of the dictionary with exactly its
channels. Every :data:`PARAM_REPORT_EVERY` periods it also sends the parameter report (PUS 20),
so a ground station that joins late learns the values its limits follow.

A counter past its channel's type (a u32 of tc_bad_packets, kept across restarts, after years of
a noisy line) is sent at the type's top, saturated: a wrapped count would go back to 0 and clear
the ground's alarm on it, and an unclamped one made the ground refuse the whole packet (found in
audit: AGENT_HK, the mode with it, lost at every period). RESET_COUNTERS starts them again.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from flight.agent.ports import Component
from flight.link.dictionary import INT_BOUNDS, Dictionary
from flight.link.messages import Codec, TelemetryError

PARAM_REPORT_EVERY = 10  # housekeeping periods between two parameter reports


class Housekeeping:
    def __init__(self, dictionary: Dictionary, codec: Codec, publish: Callable[[bytes], None],
                 now_s: Callable[[], float], sources: Iterable[Component], report_params: Callable[[], None]):
        self.dictionary = dictionary
        self._codec = codec
        self._publish = publish
        self._now_s = now_s
        self.sources = tuple(sources)
        self._report_params = report_params
        self._rounds = 0
        # The counters' bounds (unit "count", an integer type): saturated there as they are sent
        self._count_bounds = {c.name: INT_BOUNDS[c.type] for c in dictionary.channels
                              if c.unit == "count" and c.type in INT_BOUNDS}

    def values(self) -> dict[str, Any]:
        """Every channel's value now, from its one producer."""
        values: dict[str, Any] = {}
        for source in self.sources:
            produced = source.telemetry()
            if produced.keys() != set(source.CHANNELS):
                missing = sorted(set(source.CHANNELS) - produced.keys())
                extra = sorted(produced.keys() - set(source.CHANNELS))
                raise TelemetryError(f"{source.NAME} telemetry: missing {', '.join(missing) or 'none'}; "
                                     f"undeclared {', '.join(extra) or 'none'}")
            values.update(produced)
        return values

    def send(self) -> None:
        now = self._now_s()
        values = self.values()
        for packet in self.dictionary.packets:
            self._publish(self._codec.encode_hk(packet.sid, {ch: self._fit(ch, values[ch]) for ch in packet.channels},
                                                now))
        if self._rounds % PARAM_REPORT_EVERY == 0:
            self._report_params()
        self._rounds += 1

    def _fit(self, channel: str, value: Any) -> Any:
        """A counter saturated at its type's bounds (the module doc says why); any other value as it is."""
        bounds = self._count_bounds.get(channel)
        if bounds is None or not isinstance(value, int) or isinstance(value, bool):
            return value
        return min(max(value, bounds[0]), bounds[1])
