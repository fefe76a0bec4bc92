"""Housekeeping: every HK packet built from the components that own its channels, checked.

Each component produces exactly the channels it declares; this packetizer asks each once per
period, checks the keys (a missing or extra key is :class:`TelemetryError`: a bug found in the
first test, never a nil on the wire), and sends each packet of the dictionary with exactly its
channels. Every :data:`PARAM_REPORT_EVERY` periods it also sends the parameter report (PUS 20),
so a ground station that joins late learns the values its limits follow.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from flight.agent.ports import Component
from flight.link.dictionary import Dictionary
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
            self._publish(self._codec.encode_hk(packet.sid, {ch: values[ch] for ch in packet.channels}, now))
        if self._rounds % PARAM_REPORT_EVERY == 0:
            self._report_params()
        self._rounds += 1
