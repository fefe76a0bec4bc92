"""Parameters: dictionary defaults, then the config's, then those saved by command.

Saved values live in ``STATE_DIR/params.json`` (atomic, SHA-256 checked). A file that
fails its check is moved aside and reported; the agent runs on with the other layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from flight.agent.dispatcher import CommandFailed, Handler
from flight.agent.ports import Component, EventPort
from flight.link.dictionary import ArgumentError, Dictionary, FailureCode
from flight.link.messages import CommandRequest
from flight.storage import CorruptFile, quarantine, read_checked_json, write_checked_json


class ParameterStore:
    def __init__(self, dictionary: Dictionary, path: Path, config_values: dict[str, Any] | None = None):
        self.dictionary = dictionary
        self.path = Path(path)
        self._values = {p.name: p.default for p in dictionary.parameters}
        self._values.update(config_values or {})
        self.saved: dict[str, Any] = {}
        self._commanded: set[str] = set()  # set by command since start, or saved before
        self.load_error: str | None = None
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            body = read_checked_json(self.path)
            if not isinstance(body, dict):
                raise CorruptFile(f"{self.path}: expected a map of parameters")
        except CorruptFile as exc:
            self.load_error = str(exc)
            quarantine(self.path)
            return
        for name, value in body.items():
            param = self.dictionary.parameter_by_name.get(name)
            if param is None:
                continue  # a parameter a newer or older dictionary had; keep the rest
            try:
                self._values[name] = param.spec.coerce(value, name)
                self.saved[name] = self._values[name]
                self._commanded.add(name)
            except ArgumentError:
                continue

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

    def save(self) -> int:
        """Persist what commands set (not defaults or config values, which may change under it)."""
        body = {name: self._values[name] for name in sorted(self._commanded)}
        write_checked_json(self.path, body)
        self.saved = dict(body)
        return len(body)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)


# Rules between parameters, checked after every change (a value alone passes its own range).
# (lower, upper, why): ``lower`` must stay below ``upper``.
ORDERED_PARAMETERS = (
    ("thermal_soft_limit_c", "thermal_hard_limit_c", "the soft thermal limit must stay below the hard one"),
)


class Parameters(Component):
    """GET/SET/SAVE_PARAMS, and the parameter report (PUS 20) the ground resolves its limits with."""

    NAME = "parameters"
    COMMANDS = ("GET_PARAM", "SET_PARAM", "SAVE_PARAMS")
    EVENTS = ("PARAM_CHANGED", "PARAMS_SAVED")

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

    def handlers(self) -> dict[str, Handler]:
        return {"GET_PARAM": Handler(self._get), "SET_PARAM": Handler(self._set), "SAVE_PARAMS": Handler(self._save)}

    def _get(self, req: CommandRequest) -> dict[str, Any]:
        name = req.args["name"]
        param = self.store.dictionary.parameter_by_name[name]
        return {"name": name, "value": self.store[name], "default": param.default, "unit": param.spec.unit,
                "saved": self.store.saved.get(name)}

    def _set(self, req: CommandRequest) -> dict[str, Any]:
        name = req.args["name"]
        try:
            old, new = self.store.set(name, req.args["value"])
        except ArgumentError as exc:
            raise CommandFailed(str(exc), exc.code) from None
        for lower, upper, why in ORDERED_PARAMETERS:
            if name in (lower, upper) and not self.store[lower] < self.store[upper]:
                self.store.set(name, old)
                raise CommandFailed(why, FailureCode.OUT_OF_RANGE)
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
        return {"count": count, "path": str(self.store.path)}
