"""Components and the ports they are given, as F Prime builds them.

A component declares, as class data, the commands it handles, the events it emits and the
telemetry channels it produces (:class:`Component`). It is handed only the ports it needs,
never the agent:

- :class:`EventPort`: emit an event from the dictionary; only the events the component
  declares, each with exactly the event's arguments (checked when it is made and when it is
  called, so a misspelt name fails in the first test that reaches it, not on the wire);
- :class:`ModePort`: read the agent's mode, ask for SAFE (the mode manager implements it);
- :class:`FaultLog`: record a fault; the controller counts them over a window;
- the clock (:class:`flight.clock.Clock`), and plain callables for the rest.

The agent (flight/agent/agent.py) is only wiring and the loop: it builds the components,
connects their ports, registers their commands with the dispatcher and their channels with
housekeeping, and checks that together they cover the dictionary exactly.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, ClassVar, Iterable, Protocol

from flight.clock import Clock
from flight.link.definitions import Mode
from flight.link.dictionary import Dictionary
from flight.storage import redact_paths

MAX_TEXT_ARG = 200  # event text arguments are cut here: a reason quoting a huge input must still fit


def cut_text(text: str) -> str:
    """``text`` cut to an event's :data:`MAX_TEXT_ARG` characters, its last one a mark where it was longer:
    a reason whose end was lost must not read as whole (found in audit)."""
    return text if len(text) <= MAX_TEXT_ARG else text[:MAX_TEXT_ARG - 1] + "\u2026"


class WiringError(RuntimeError):
    """Components and dictionary disagree (an undeclared event, a channel nobody produces...)."""


class Component:
    """Base of the agent's components: what each declares, checked by the agent at start.

    ``COMMANDS``: dictionary commands it handles (``handlers()`` returns exactly these);
    ``EVENTS``: events it emits (its :class:`EventPort` allows only these);
    ``CHANNELS``: telemetry channels it produces (``telemetry()`` returns exactly these).
    """

    NAME: ClassVar[str] = "component"
    COMMANDS: ClassVar[tuple[str, ...]] = ()
    EVENTS: ClassVar[tuple[str, ...]] = ()
    CHANNELS: ClassVar[tuple[str, ...]] = ()

    def handlers(self) -> dict[str, Any]:
        """Command name -> :class:`flight.agent.dispatcher.Handler`."""
        return {}

    def telemetry(self) -> dict[str, Any]:
        """Channel name -> value now (None: not available now), for exactly ``CHANNELS``."""
        return {}


class EventPort:
    """Emit events of the dictionary on behalf of one component, checked against its declaration."""

    def __init__(self, owner: str, declared: Iterable[str], dictionary: Dictionary,
                 sink: Callable[[str, dict[str, Any]], None]):
        self.owner = owner
        self.declared = frozenset(declared)
        self._dictionary = dictionary
        self._sink = sink
        unknown = sorted(self.declared - set(dictionary.event_by_name))
        if unknown:
            raise WiringError(f"{owner} declares events the dictionary lacks: {', '.join(unknown)}")

    def __call__(self, name: str, /, **args: Any) -> None:
        if name not in self.declared:
            raise WiringError(f"{self.owner} emits {name}, which it does not declare in EVENTS")
        event = self._dictionary.event_by_name[name]
        if set(args) != set(event.args):
            raise WiringError(f"{self.owner}: event {name} takes {sorted(event.args)}, got {sorted(args)}")
        # Texts are cut to the packet's limit, and any absolute path in them to its file's name.
        self._sink(name, {k: cut_text(redact_paths(v)) if isinstance(v, str) else v for k, v in args.items()})


class ModePort(Protocol):
    """What a component may know and ask of the agent's mode."""

    @property
    def mode(self) -> Mode: ...

    def enter_safe(self, reason: str) -> None: ...


class FaultLog:
    """Faults recorded by any component, with their time on the agent's clock (bounded)."""

    MAX_KEPT = 1000  # far above any fault_limit; a storm of faults must not grow memory

    def __init__(self, clock: Clock):
        self._clock = clock
        self._faults: deque[tuple[float, str]] = deque(maxlen=self.MAX_KEPT)

    def record(self, what: str) -> None:
        self._faults.append((self._clock.monotonic_s(), what))

    def count_since(self, since_s: float) -> int:
        """Faults recorded at or after ``since_s`` (monotonic); older ones are forgotten."""
        while self._faults and self._faults[0][0] < since_s:
            self._faults.popleft()
        return len(self._faults)

    def clear(self) -> None:
        self._faults.clear()


def check_wiring(dictionary: Dictionary, components: Iterable[Component], extra_events: Iterable[str] = ()) -> None:
    """Every command handled once, every HK channel produced once, every event declared.

    ``extra_events``: events emitted by something that is not a component (none today).
    Raises :class:`WiringError` listing what is wrong.
    """
    problems: list[str] = []
    commands: dict[str, str] = {}
    channels: dict[str, str] = {}
    events: set[str] = set(extra_events)
    for c in components:
        for name in c.COMMANDS:
            if name not in dictionary.command_by_name:
                problems.append(f"{c.NAME} handles {name}, not a dictionary command")
            if name in commands:
                problems.append(f"{name} is handled by both {commands[name]} and {c.NAME}")
            commands[name] = c.NAME
        handled = set(c.handlers())
        if handled != set(c.COMMANDS):
            problems.append(f"{c.NAME} declares {sorted(c.COMMANDS)} but has handlers for {sorted(handled)}")
        for name in c.CHANNELS:
            if name not in dictionary.channel_by_name:
                problems.append(f"{c.NAME} produces {name}, not a dictionary channel")
            if name in channels:
                problems.append(f"channel {name} is produced by both {channels[name]} and {c.NAME}")
            channels[name] = c.NAME
        events.update(c.EVENTS)
    problems += [f"no component handles command {c.name}" for c in dictionary.commands if c.name not in commands]
    in_packets = {ch for p in dictionary.packets for ch in p.channels}
    problems += [f"no component produces channel {ch}" for ch in sorted(in_packets - set(channels))]
    problems += [f"channel {ch} is produced but in no packet" for ch in sorted(set(channels) - in_packets)]
    problems += [f"no component declares event {e.name}" for e in dictionary.events if e.name not in events]
    if problems:
        raise WiringError("; ".join(problems))
