"""What the agent reads from its board and what it may set, whatever the board is.

A backend (``jetson``, ``linux``, ``sim``) turns its sensors into one :class:`HalReading`
and its power knobs into :class:`PowerMode` values. :func:`open_board` is the one factory:
it returns a :class:`Board`, the HAL with the backend's abilities spelled out (an EPS, the
clock, the harness's stepper), so the agent never asks which backend it has.

Two rules every backend keeps:

- ``read()`` never raises because one sensor failed. A zone that reads empty, a rail that
  vanished, a counter that needs a second sample: each goes into ``missing`` with the
  reason, and the rest of the reading is still good. A flight computer that stops reading
  temperatures because one file is empty has lost more than one sensor.
- Power modes are chosen by name. Jetson mode IDs differ between boards (FACTS.md
  "Jetson interfaces"; ``15W`` is ID 0 on an Orin Nano with JetPack 6.2, ID 1 on an AGX
  Orin), names do not.
"""

from __future__ import annotations

import abc
import enum
import importlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Union


class HalError(RuntimeError):
    """A power-mode or backend request that cannot be done; the text says why and what would work."""


class PowerModesUnavailable(HalError):
    """Power modes can be neither read nor set until something outside the agent changes (a Jetson's nvpmodel
    not there or not executable: a dev board, a container without it; its nvpmodel.conf missing, unreadable or
    with no usable mode). One condition for as long as it lasts, not a new failure at each try: the agent says
    it and counts it as a fault once."""


# --- values ---------------------------------------------------------------------------------

BUDGET_SOURCES = ("name", "profile", "software", "given", "unknown")


def _finite(value: float | None) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))


@dataclass(frozen=True)
class RailReading:
    """One power rail. ``voltage_v``/``current_a`` are None where a sensor measures only
    power (RAPL energy counters); ``power_w`` is always there."""

    voltage_v: float | None
    current_a: float | None
    power_w: float

    def __post_init__(self) -> None:
        for name in ("voltage_v", "current_a", "power_w"):
            value = getattr(self, name)
            if not _finite(value) or (name == "power_w" and value is None):
                raise ValueError(f"RailReading.{name} must be a finite number, got {value!r}")

    @classmethod
    def from_mv_ma(cls, voltage_mv: int, current_ma: int) -> "RailReading":
        """From INA3221 hwmon units (mV, mA). One division of the integer product, so
        5072 mV x 921 mA gives exactly 4.671312 W."""
        return cls(voltage_mv / 1000.0, current_ma / 1000.0, (voltage_mv * current_ma) / 1_000_000.0)


@dataclass(frozen=True)
class HalReading:
    """Everything one ``read()`` saw. Dicts are copied at construction; treat them as read-only.

    ``board_power_w`` is the board's input power where one rail measures it (``VDD_IN`` on
    Orin NX/Nano); on a board without such a rail a backend may give a sum of rails and says
    so in ``notes``. ``cpu_pct`` is None until two ``/proc/stat`` samples exist.
    ``missing`` names each sensor that could not be read, as ``"what: why"``.
    """

    temps_c: dict[str, float]
    rails: dict[str, RailReading]
    board_power_w: float | None
    cpu_pct: float | None
    mem_pct: float | None
    missing: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "temps_c", dict(self.temps_c))
        object.__setattr__(self, "rails", dict(self.rails))
        object.__setattr__(self, "missing", tuple(self.missing))
        object.__setattr__(self, "notes", tuple(self.notes))
        for zone, temp_c in self.temps_c.items():
            if not isinstance(zone, str) or temp_c is None or not _finite(temp_c):
                raise ValueError(
                    f"temps_c[{zone!r}] = {temp_c!r}: a temperature must be a finite number; "
                    "put an unreadable zone in `missing` instead"
                )
        for rail, value in self.rails.items():
            if not isinstance(value, RailReading):
                raise ValueError(f"rails[{rail!r}] must be a RailReading, got {type(value).__name__}")
        if not _finite(self.board_power_w):
            raise ValueError(f"board_power_w must be a finite number or None, got {self.board_power_w!r}")
        for name in ("cpu_pct", "mem_pct"):
            value = getattr(self, name)
            if not _finite(value) or (value is not None and not 0.0 <= value <= 100.0):
                raise ValueError(f"{name} must be None or within 0..100 %, got {value!r}")
        for text in (*self.missing, *self.notes):
            if not isinstance(text, str) or not text:
                raise ValueError(f"missing/notes entries must be non-empty strings, got {text!r}")

    def as_dict(self) -> dict[str, Any]:
        """Plain dicts, lists and numbers: what telemetry encoders (msgpack, JSON) take."""
        out = asdict(self)
        out["missing"] = list(self.missing)
        out["notes"] = list(self.notes)
        return out


@dataclass(frozen=True)
class PowerMode:
    """A power mode as the backend offers it.

    ``budget_w`` is None only where nothing says what the mode allows (a MAXN mode on a
    board without a profile); ``budget_source`` says where the number came from: the mode's
    name (``15W``), the board profile (MAXN), ``software`` (a PC's invented modes),
    ``given`` (by the caller, origin not stated; the default when a budget is passed) or
    ``unknown`` (the default without one). ``online_cpus`` and the frequency caps come
    from nvpmodel.conf; None means the conf leaves them uncapped (``-1``) or does not say.
    """

    name: str
    id: int
    budget_w: float | None
    budget_source: str | None = None
    online_cpus: int | None = None
    cpu_max_freq_mhz: float | None = None
    gpu_max_freq_mhz: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"power mode name must be a non-empty word, got {self.name!r}")
        if not isinstance(self.id, int) or isinstance(self.id, bool) or self.id < 0:
            raise ValueError(f"power mode {self.name}: id must be a whole number >= 0, got {self.id!r}")
        if self.budget_source is None:
            object.__setattr__(self, "budget_source", "unknown" if self.budget_w is None else "given")
        if self.budget_source not in BUDGET_SOURCES:
            raise ValueError(
                f"power mode {self.name}: budget_source must be one of {BUDGET_SOURCES}, got {self.budget_source!r}"
            )
        if self.budget_w is None:
            if self.budget_source != "unknown":
                raise ValueError(f"power mode {self.name}: no budget_w but budget_source {self.budget_source!r}")
        elif not _finite(self.budget_w) or self.budget_w <= 0:
            raise ValueError(
                f"power mode {self.name}: budget_w must be a positive number of watts, got {self.budget_w!r}"
            )
        elif self.budget_source == "unknown":
            raise ValueError(f"power mode {self.name}: budget_w {self.budget_w} given but budget_source is 'unknown'")
        if self.online_cpus is not None and (not isinstance(self.online_cpus, int) or self.online_cpus < 1):
            raise ValueError(f"power mode {self.name}: online_cpus must be >= 1 or None, got {self.online_cpus!r}")
        for name in ("cpu_max_freq_mhz", "gpu_max_freq_mhz"):
            value = getattr(self, name)
            if not _finite(value) or (value is not None and value <= 0):
                raise ValueError(f"power mode {self.name}: {name} must be positive or None, got {value!r}")


def order_power_modes(modes: list[PowerMode] | tuple[PowerMode, ...]) -> tuple[PowerMode, ...]:
    """Lowest budget first. A mode without a budget goes last: on a Jetson that is a MAXN
    mode, which has no cap at all."""
    return tuple(sorted(modes, key=lambda m: (m.budget_w is None, m.budget_w or 0.0, m.id)))


def find_power_mode(modes: tuple[PowerMode, ...], name: str) -> PowerMode:
    """The mode called ``name`` (exactly); :class:`HalError` listing the known names if none is."""
    for mode in modes:
        if mode.name == name:
            return mode
    known = ", ".join(m.name for m in modes) or "none"
    hint = ""
    folded = [m.name for m in modes if m.name.lower() == str(name).lower()]
    if folded:
        hint = f"; names are case-sensitive, did you mean {folded[0]!r}?"
    raise HalError(f"unknown power mode {name!r}: this board offers {known}{hint}")


# --- the interface --------------------------------------------------------------------------


class Hal(abc.ABC):
    """A board's sensors and power modes. Usable as a context manager (``close()`` on exit)."""

    backend: str = "?"

    @abc.abstractmethod
    def read(self) -> HalReading:
        """Read every sensor once. Never raises for a sensor: failures go into ``missing``."""

    @abc.abstractmethod
    def power_modes(self) -> tuple[PowerMode, ...]:
        """Every mode the board offers, lowest budget first."""

    @abc.abstractmethod
    def current_power_mode(self) -> PowerMode | None:
        """The mode in force, or None where the backend cannot tell."""

    @abc.abstractmethod
    def set_power_mode(self, name: str) -> PowerMode:
        """Switch to the mode called ``name`` and return it once the board reports it in
        force; :class:`HalError` for an unknown name or a set that did not take."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Backend, board and the paths used: what an operator needs to check a reading by hand."""

    def close(self) -> None:
        """Release what the backend holds. The built-in backends hold nothing open."""

    def power_mode(self, name: str) -> PowerMode:
        """Look a mode up by name without setting it."""
        return find_power_mode(self.power_modes(), name)

    def __enter__(self) -> "Hal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- boards: a HAL with its abilities ---------------------------------------------------------


class SensorSet(str, enum.Enum):
    """What the backend's list of sensors means, for whoever judges a missing one."""

    KNOWN = "known"            # the board profile names every zone and rail: a missing one is a fault
    DISCOVERED = "discovered"  # whatever this PC happens to have
    SIMULATED = "simulated"    # the HIL harness: every value is simulated


class PowerControl(str, enum.Enum):
    """What setting a power mode does."""

    NVPMODEL = "nvpmodel"    # really changes the board (Jetson)
    SOFTWARE = "software"    # a name the agent keeps; the machine is unchanged (a PC)
    SIMULATED = "simulated"  # the harness turns it into simulated power


@dataclass(frozen=True)
class EpsReading:
    """Battery and solar input from the electrical power system; None where not measured."""

    soc_pct: float | None = None
    bus_voltage_v: float | None = None
    solar_power_w: float | None = None
    # The battery's capacity as its gauge has learnt it (SBS FullChargeCapacity): a battery fades, and its
    # nameplate in the configuration then overstates every percent of charge.
    full_charge_wh: float | None = None
    missing: tuple[str, ...] = ()  # "eps NAME: why" for a value the EPS gave that is no reading (NaN, out of range)

    def __post_init__(self) -> None:
        for name in ("soc_pct", "bus_voltage_v", "solar_power_w", "full_charge_wh"):
            if not _finite(getattr(self, name)):
                raise ValueError(f"EpsReading.{name} must be a finite number or None, got {getattr(self, name)!r}")


class EpsReader(abc.ABC):
    """A source of :class:`EpsReading`; ``source`` says where the values come from."""

    source: Any  # flight.link.definitions.EpsSource

    @abc.abstractmethod
    def read_eps(self) -> EpsReading: ...


class Stepper(abc.ABC):
    """The harness's end of a simulated board: it feeds readings and, in lockstep, time.

    The agent's loop polls :meth:`pollables`, calls :meth:`receive` (True when simulated time
    moved, so timers may be due), and answers every step with :meth:`answer` once it has
    handled it: the harness waits for that answer before it moves time again.
    """

    lockstep: bool  # True: the harness steps the agent's SimClock; False: real time, readings only

    @abc.abstractmethod
    def pollables(self) -> list[Any]: ...

    @abc.abstractmethod
    def receive(self) -> bool:
        """Take in what the harness sent; True if simulated time moved."""

    @property
    @abc.abstractmethod
    def pending_step(self) -> bool:
        """A step was received and not answered yet."""

    @abc.abstractmethod
    def answer(self, mode: Any, admission: Any, compute_duty: float) -> None:
        """The agent's load after the step (mode, admission: dictionary enumerations)."""

    @abc.abstractmethod
    def greet(self) -> None:
        """Say hello again if the harness has been silent (it may have restarted)."""

    def attach_link(self, packets_in: Callable[[], int]) -> None:
        """The agent's count of packets taken from its link since it started, for a stepper that
        orders the harness's ground packets with its steps (flight/hal/sim.py); by default unused."""

    def hold_s(self) -> float | None:
        """Wall seconds a received step is still held for the link; None: none held."""
        return None

    def close(self) -> None:
        """Release the connection."""


@dataclass(frozen=True)
class BoardOptions:
    """What a backend may be told: the configuration's [hal] section."""

    board: str | None = None  # a profile id; None: detect (jetson) or none (linux)
    root: str = "/"
    nvpmodel: str = "nvpmodel"
    sim_endpoint: str = "tcp://127.0.0.1:5560"
    lockstep: bool = True


@dataclass
class Board:
    """A board as the agent uses it: the HAL and, explicitly, what else this backend offers.

    Nothing in the agent asks a HAL what it can do; it reads these fields. ``eps`` is None
    where no battery is measured (a Jetson on a desk); ``stepper`` only where the HIL harness
    drives the board; ``nvpmodel`` is the object that runs nvpmodel, where power modes are
    nvpmodel's. ``notes``: what the backend found as it opened that limits the board without
    stopping it, as ``"what: why"`` (a Jetson whose nvpmodel is not there), said at start.
    """

    backend: str
    hal: Hal
    clock: Any  # flight.clock.Clock
    sensors: SensorSet
    power_control: PowerControl
    profile: Any = None  # flight.hal.boards.BoardProfile, where one is known
    eps: EpsReader | None = None
    stepper: Stepper | None = None
    nvpmodel: Any = None
    notes: tuple[str, ...] = ()

    @property
    def simulated(self) -> bool:
        return self.sensors is SensorSet.SIMULATED

    def close(self) -> None:
        if self.stepper is not None:
            self.stepper.close()
        self.hal.close()


# Backend name -> "module:callable" (imported on first use, so a backend's imports cost
# nothing until it is asked for) or a callable taking :class:`BoardOptions` and returning a
# :class:`Board`.
BACKENDS: dict[str, Union[str, Callable[[BoardOptions], Board]]] = {
    "jetson": "flight.hal.jetson:open_board",
    "linux": "flight.hal.linux:open_board",
    "sim": "flight.hal.sim:open_board",
}


def register_backend(name: str, factory: Union[str, Callable[[BoardOptions], Board]], *, replace: bool = False) -> None:
    """Make ``open_board(name, ...)`` call ``factory``. Refuses to replace silently."""
    if name in BACKENDS and not replace:
        raise HalError(f"backend {name!r} is already registered ({BACKENDS[name]!r}); pass replace=True to override")
    BACKENDS[name] = factory


def _resolve(factory: Union[str, Callable[..., Board]]) -> Callable[..., Board]:
    if callable(factory):
        return factory
    module_name, _, attr_path = factory.partition(":")
    target: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        target = getattr(target, attr)
    return target


def open_board(backend: str, options: BoardOptions | None = None) -> Board:
    """The one factory: the backend named ``backend`` (see :data:`BACKENDS`) for ``options``."""
    try:
        factory = BACKENDS[backend]
    except KeyError:
        raise HalError(f"unknown HAL backend {backend!r}: choose one of {', '.join(sorted(BACKENDS))}") from None
    board = _resolve(factory)(options or BoardOptions())
    if not isinstance(board, Board) or not isinstance(board.hal, Hal):
        raise HalError(f"backend {backend!r} factory returned {type(board).__name__}, not a Board with a Hal")
    return board


__all__ = [
    "BACKENDS",
    "Board",
    "BoardOptions",
    "EpsReader",
    "EpsReading",
    "Hal",
    "HalError",
    "HalReading",
    "PowerControl",
    "PowerMode",
    "RailReading",
    "SensorSet",
    "Stepper",
    "find_power_mode",
    "open_board",
    "order_power_modes",
    "register_backend",
]
