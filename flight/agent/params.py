"""Parameters: dictionary defaults, then the config's, then those saved by command.

Saved values live in ``STATE_DIR/params.json`` (atomic, SHA-256 checked). A file that
fails its check is moved aside and reported; the agent runs on with the other layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flight.link.dictionary import ArgumentError, Dictionary, FailureCode
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
