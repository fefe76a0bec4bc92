"""What the agent keeps across restarts besides parameters: boot count, counters, orbit, how it stopped.

``STATE_DIR/state.json`` (atomic, SHA-256 checked). ``running`` is set true at start and
false on a clean stop, so the next start knows whether the last one crashed or lost power.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flight.storage import CorruptFile, quarantine, read_checked_json, write_checked_json


@dataclass
class AgentState:
    boot_count: int = 0
    running: bool = False
    counters: dict[str, int] = field(default_factory=dict)
    tle: list[str] | None = None
    power_mode_cap: str = "AUTO"
    next_job_id: int = 1


def _check_types(state: AgentState, path: Path) -> None:
    """A file can pass its hash and still hold nonsense (written by a bug): check every field."""
    ok = (
        isinstance(state.boot_count, int) and not isinstance(state.boot_count, bool) and state.boot_count >= 0
        and isinstance(state.running, bool)
        and isinstance(state.counters, dict)
        and all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for k, v in state.counters.items())
        and (state.tle is None or (isinstance(state.tle, list) and len(state.tle) == 2
                                   and all(isinstance(line, str) for line in state.tle)))
        and isinstance(state.power_mode_cap, str)
        and isinstance(state.next_job_id, int) and state.next_job_id >= 1
    )
    if not ok:
        raise CorruptFile(f"{path}: a field has the wrong type or range")


class StateFile:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.load_error: str | None = None
        self._last_written: dict[str, Any] | None = None

    def load(self) -> AgentState:
        if not self.path.exists():
            return AgentState()
        try:
            body = read_checked_json(self.path)
            if not isinstance(body, dict):
                raise CorruptFile(f"{self.path}: expected a map")
            state = AgentState(**{k: v for k, v in body.items() if k in AgentState.__dataclass_fields__})
            _check_types(state, self.path)
            return state
        except (CorruptFile, TypeError, AttributeError) as exc:
            self.load_error = str(exc)
            quarantine(self.path)
            return AgentState()

    def save(self, state: AgentState) -> bool:
        """Write if anything changed since the last write (flash wears); True if written."""
        body = asdict(state)
        if body == self._last_written:
            return False
        write_checked_json(self.path, body)
        self._last_written = body
        return True
