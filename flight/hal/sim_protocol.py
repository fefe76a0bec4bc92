"""Messages between the HIL harness and the agent's ``sim`` backend: typed records, one codec.

The agent connects a DEALER to the harness's ROUTER (``sim_endpoint``); the harness is
``hil/sim_env.py``, the agent's end ``flight/hal/sim.py``. Both import this module.

- agent → harness :class:`Hello`: who is here (repeated while no step comes, so a restarted
  harness finds the agent again).
- harness → agent :class:`Env`: the world at one instant: temperatures, rail and board power,
  battery and solar input, load. With ``t_s`` (lockstep) the agent's simulated clock jumps to
  it, the agent runs whatever is due, then answers; without it (real time) the values just
  replace the previous ones.
- agent → harness :class:`Load`: the load after that step (power mode, mode, admission, compute
  duty), which the harness feeds back into its battery and thermal models. ``seq`` echoes the
  :class:`Env` it answers.

The ground link is a second path between them (the harness's ground client to the agent's
link), and nothing orders two sockets. So that a lockstep run does not hang on which arrives
first, each :class:`Load` says how many packets the agent's link has taken in (``link_taken``),
and the next :class:`Env` how many it must have taken before that step (``link_in``: that count
plus what the harness has put on the link since, its commands and the store's
acknowledgements). The agent takes them in, at the previous step's time, before it moves its
clock (bounded: :data:`flight.hal.sim.LINK_HOLD_S`; the :class:`Load` counts such steps,
``link_holds_expired``). Counted from the agent's own count each step, a packet lost, late, or
sent to the agent before a restart costs one step's hold at most. Before, an acknowledgement
sent after step k was now and then taken at step k + 1, and the playback it started, with the
events a run counts, moved.

Readings may be nil or not finite: that is how the harness plays a dead or stuck sensor, and
the sim backend reports such a value as missing. Every value here is simulated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flight.link.definitions import Admission, Mode
from flight.records import RecordCodec


@dataclass(frozen=True)
class Hello:
    board: str
    lockstep: bool
    modes: tuple[str, ...]
    t_s: float | None = None


@dataclass(frozen=True)
class EpsValues:
    soc_pct: float | None = None
    bus_voltage_v: float | None = None
    solar_power_w: float | None = None
    full_charge_wh: float | None = None  # the gauge's learnt capacity (None: the gauge does not say)


@dataclass(frozen=True)
class Env:
    seq: int
    t_s: float | None  # simulated UTC (lockstep), or None in real time
    temps_c: dict[str, float | None] = field(default_factory=dict)
    rails_w: dict[str, float | None] = field(default_factory=dict)
    board_power_w: float | None = None
    eps: EpsValues = field(default_factory=EpsValues)
    cpu_pct: float | None = None
    mem_pct: float | None = None
    link_in: int | None = None  # packets the agent's link must have taken in before this step; None: no wait


@dataclass(frozen=True)
class Load:
    seq: int | None
    t_s: float | None
    power_mode: str
    mode: Mode
    admission: Admission
    compute_duty: float
    link_holds_expired: int = 0  # steps taken without every ground packet the Env said went before them
    link_taken: int | None = None  # packets the agent's link had taken in when it answered


CODEC = RecordCodec("sim protocol", (Hello, Env, Load))
encode = CODEC.encode
decode = CODEC.decode
