"""Parameters: dictionary defaults, then the config's, then those saved by command.

Saved values live in ``STATE_DIR/params.json`` (atomic, SHA-256 checked). A file that
fails its check is moved aside and reported; the agent runs on with the other layers. A saved
value that this dictionary refuses (out of range after a range was narrowed, of the wrong type,
a parameter it no longer has, or, both halves of a pair, breaking a rule between parameters) is
left out, the value under it kept, and said at boot (``PARAM_SAVED_REFUSED``, :data:`REFUSED_SAID`
one by one, then one event for the rest) and counted (``params_saved_refused``, until
RESET_COUNTERS): an operator's setting is never lost without a word.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from flight.agent.dispatcher import CommandFailed, Handler
from flight.agent.ports import Component, EventPort
from flight.link.definitions import ORDERED_PARAMETERS
from flight.link.dictionary import ArgumentError, Dictionary, FailureCode
from flight.link.messages import CommandRequest
from flight.storage import CorruptFile, quarantine, read_checked_json, write_checked_json


Rule = Callable[[dict[str, Any]], "tuple[str, str] | None"]
"""A rule between parameters and what the board is, beyond the dictionary's ranges: (parameter, why) where the
values break it, else None (the board profile's shutdown temperature: :func:`flight.config.board_limit_problem`)."""


class ParameterStore:
    def __init__(self, dictionary: Dictionary, path: Path, config_values: dict[str, Any] | None = None,
                 rule: Rule | None = None):
        """``rule``: checked at load (a saved value breaking it is refused, as one out of range) and at each set;
        the config's values already keep it (the agent's start checks them)."""
        self.dictionary = dictionary
        self.path = Path(path)
        self.rule = rule
        self._values = {p.name: p.default for p in dictionary.parameters}
        self._values.update(config_values or {})
        self._config_sets = any(self._values[p.name] != p.default for p in dictionary.parameters)
        self.saved: dict[str, Any] = {}
        self._commanded: set[str] = set()  # set by command since start, or saved before
        self.load_error: str | None = None
        self.set_aside: bool = False  # the saved file that failed its check was moved aside (NAME.corrupt)
        self.refused: list[tuple[str, str, str]] = []  # saved values left out at load: (name, value as text, why)
        self._load()

    def in_force(self) -> str:
        """What a saved file that failed its check leaves in force, said at boot (found in audit: "defaults in
        force" where the config's values were, and "moved aside" where it could not be)."""
        where = (f"moved aside ({self.path.name}.corrupt)" if self.set_aside else
                 "not moved aside (the disk refused: it is read again at the next start)")
        values = "the config's values (defaults for the rest)" if self._config_sets else "defaults"
        return f"{where}, {values} in force"

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            body = read_checked_json(self.path)
            if not isinstance(body, dict):
                raise CorruptFile(f"{self.path}: expected a map of parameters")
        except CorruptFile as exc:
            self.load_error = str(exc)
            self.set_aside = quarantine(self.path) is not None
            return
        under = dict(self._values)  # what each saved value would replace: defaults, then the config's
        for name, value in body.items():
            param = self.dictionary.parameter_by_name.get(name)
            if param is None:  # one a newer or older dictionary had; keep the rest
                self._refuse(name, value, "no such parameter in this dictionary")
                continue
            try:
                self._values[name] = param.spec.coerce(value, name)
            except ArgumentError as exc:
                self._refuse(name, value, str(exc))
                continue
            self.saved[name] = self._values[name]
            self._commanded.add(name)
        # The board's bounds first (found in audit: 110 C saved for the hard limit of an Orin Nano, which shuts
        # down at 97 C, overrode the config the agent's start had checked): a saved value breaking one gives way,
        # and the pairs below are then held against the value under it (found in review: a soft limit saved
        # with it stayed above the hard limit in force).
        problem = self.rule_problem()
        if problem is not None and problem[0] in self.saved:
            name = problem[0]
            self._refuse(name, self.saved.pop(name), problem[1])
            self._commanded.discard(name)
            self._values[name] = under[name]
        # A pair saved apart may break its rule with the config's other half: both saved halves give way (the
        # layers under them keep the rule: load_config checks it).
        for lower, upper, why in ORDERED_PARAMETERS:
            if not self._values[lower] < self._values[upper]:
                for name in (lower, upper):
                    if name in self.saved:
                        self._refuse(name, self.saved.pop(name), why)
                        self._commanded.discard(name)
                        self._values[name] = under[name]

    def rule_problem(self) -> tuple[str, str] | None:
        """(parameter, why) where the values in force break :attr:`rule`, else None."""
        return None if self.rule is None else self.rule(dict(self._values))

    def _refuse(self, name: str, value: Any, why: str) -> None:
        """One saved value left out; kept as short text (a file may hold any JSON, of any size)."""
        self.refused.append((name[:MAX_SAID], repr(value)[:MAX_SAID], why[:MAX_SAID]))

    def forget_refused(self) -> None:
        """RESET_COUNTERS: the operators have seen them (their events stay in the store)."""
        self.refused.clear()

    def get(self, name: str) -> Any:
        return self._values[name]

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def set(self, name: str, value: Any) -> tuple[Any, Any]:
        """Check and set; return (old, new). ArgumentError if the name or value is bad."""
        param = self.dictionary.parameter_by_name.get(name)
        if param is None:
            raise ArgumentError(f"no parameter {name!r}", FailureCode.BAD_ARGUMENTS)
        new = param.spec.coerce(value, name)
        old = self._values[name]
        self._values[name] = new
        self._commanded.add(name)
        return old, new

    def is_commanded(self, name: str) -> bool:
        """Whether a command set ``name`` (SAVE_PARAMS keeps it)."""
        return name in self._commanded

    def restore(self, name: str, value: Any, commanded: bool) -> None:
        """Undo a :meth:`set` that a later check refused: the value, and whether a command had set it (an
        audit: a refused SET_PARAM left the name commanded, and SAVE_PARAMS then kept the config's value)."""
        self._values[name] = value
        if not commanded:
            self._commanded.discard(name)

    def save(self) -> int:
        """Persist what commands set (not defaults or config values, which may change under it)."""
        body = {name: self._values[name] for name in sorted(self._commanded)}
        write_checked_json(self.path, body)
        self.saved = dict(body)
        return len(body)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)


REFUSED_SAID = 16  # saved values refused at load said one by one at boot; the rest in one event
MAX_SAID = 200  # characters kept of a refused name, value or reason (an event's text is cut there too)


class Parameters(Component):
    """GET/SET/SAVE_PARAMS, and the parameter report (PUS 20) the ground resolves its limits with."""

    NAME = "parameters"
    COMMANDS = ("GET_PARAM", "SET_PARAM", "SAVE_PARAMS")
    EVENTS = ("PARAM_CHANGED", "PARAMS_SAVED", "PARAM_SAVED_REFUSED")
    CHANNELS = ("params_saved_refused",)

    def __init__(self, store: ParameterStore, emit: EventPort, report: Callable[[dict[str, Any]], None]):
        self.store = store
        self._emit = emit
        self._report = report
        self.on_change: list[Callable[[str, Any], None]] = []

    def __getitem__(self, name: str) -> Any:
        return self.store[name]

    def report(self) -> None:
        """Send every parameter's value (at boot, on a period, and after each change)."""
        self._report(self.store.as_dict())

    def booted(self) -> None:
        """Say each saved value the store left out at load (its value as text: a file holds any type),
        and the value in force instead; past :data:`REFUSED_SAID` of them, one more event, with no
        name, says how many were not said one by one (the channel counts them all)."""
        refused = self.store.refused
        for name, value, why in refused[:REFUSED_SAID]:
            now = self.store.get(name) if name in self.store.dictionary.parameter_by_name else None
            self._emit("PARAM_SAVED_REFUSED", name=name, value=value, reason=why, now=now)
        if len(refused) > REFUSED_SAID:
            self._emit("PARAM_SAVED_REFUSED", name="", value="",
                       reason=f"{len(refused) - REFUSED_SAID} more, not said one by one", now=None)

    def telemetry(self) -> dict[str, Any]:
        return {"params_saved_refused": len(self.store.refused)}

    def handlers(self) -> dict[str, Handler]:
        return {"GET_PARAM": Handler(self._get), "SET_PARAM": Handler(self._set), "SAVE_PARAMS": Handler(self._save)}

    def _get(self, req: CommandRequest) -> dict[str, Any]:
        name = req.args["name"]
        param = self.store.dictionary.parameter_by_name[name]
        return {"name": name, "value": self.store[name], "default": param.default, "unit": param.spec.unit,
                "saved": self.store.saved.get(name)}

    def _set(self, req: CommandRequest) -> dict[str, Any]:
        name = req.args["name"]
        was_commanded = self.store.is_commanded(name)
        try:
            old, new = self.store.set(name, req.args["value"])
        except ArgumentError as exc:
            raise CommandFailed(str(exc), exc.code) from None
        for lower, upper, why in ORDERED_PARAMETERS:
            if name in (lower, upper) and not self.store[lower] < self.store[upper]:
                self.store.restore(name, old, was_commanded)
                raise CommandFailed(why, FailureCode.OUT_OF_RANGE)
        problem = self.store.rule_problem()
        if problem is not None and problem[0] == name:
            self.store.restore(name, old, was_commanded)
            raise CommandFailed(f"{name}: {problem[1]}", FailureCode.OUT_OF_RANGE)
        for listener in self.on_change:
            listener(name, new)
        self._emit("PARAM_CHANGED", name=name, value=new, old=old)
        self.report()
        return {"name": name, "old": old, "value": new}

    def _save(self, req: CommandRequest) -> dict[str, Any]:
        try:
            count = self.store.save()
        except OSError as exc:
            raise CommandFailed(f"could not write {self.store.path.name}: {exc.strerror}") from None
        self._emit("PARAMS_SAVED", count=count, path=self.store.path.name)
        return {"count": count, "path": self.store.path.name}  # a file, not the board's directory (SEC-006; an audit)
