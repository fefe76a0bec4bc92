"""Contacts: the passes over the configured ground stations, predicted from the agent's orbit
(sgp4) and each station's elevation mask (:mod:`flight.orbit.passes`), and the next AOS and
LOS in telemetry.

Predicted a day ahead, again every :data:`REPREDICT_S`, whenever the orbit changes (SET_TLE)
and whenever UTC steps against the monotonic clock (NTP, GNSS, a time set: the passes are in
UTC, the period on the monotonic clock, as the scheduler tells a jump); each pass is announced
once, ``CONTACT_PREDICTED``, so that the ground's event log is the pass plan. Without stations
or an orbit the channels are nil: nothing is guessed.
"""

from __future__ import annotations

from typing import Any, Callable

from flight.agent.ports import Component, EventPort
from flight.agent.schedule import JUMP_TOLERANCE_S
from flight.clock import Clock
from flight.orbit import Orbit, PropagationError
from flight.orbit.passes import Pass, Station, contact_times, predict_passes

SPAN_S = 86400.0  # a day of passes: past the next contact of a single station, with margin
REPREDICT_S = 600.0  # the orbit drifts from its TLE slowly; ten minutes keeps AOS to a second or two
ANNOUNCE_S = 3 * 3600.0  # passes announced this far ahead (the rest when they come closer)
LOOKBACK_S = 1800.0  # the prediction starts this far back: longer than a pass over a station from low orbit
PROPAGATION_MARGIN_S = 60.0  # short of the time sgp4 failed at, for an orbit that decays within SPAN_S


class Contacts(Component):
    NAME = "contacts"
    EVENTS = ("CONTACT_PREDICTED",)
    CHANNELS = ("next_aos_in_s", "next_los_in_s", "next_pass_station")

    def __init__(self, stations: tuple[Station, ...], orbit: Callable[[], Orbit | None], clock: Clock,
                 emit: EventPort, internal_error: Callable[[str, BaseException], None]):
        self.stations = stations
        self._orbit = orbit
        self._clock = clock
        self._emit = emit
        self._internal_error = internal_error
        self.passes: list[Pass] = []
        self._predicted_for: Orbit | None = None
        self._predicted_at = -float("inf")
        self._predicted_utc_s = 0.0  # UTC when predicted: a step of UTC since is a new prediction
        self._announced: set[tuple[str, int]] = set()

    def tick(self) -> None:
        """On the control period: predict again if due, announce passes coming within ANNOUNCE_S."""
        if not self._predict_if_due():
            return
        now = self._clock.now_s()
        for p in self.passes:
            key = (p.station, int(p.aos_unix_s // 60))  # a pass, give or take a re-prediction's second
            if p.aos_unix_s - now <= ANNOUNCE_S and p.los_unix_s > now and key not in self._announced:
                self._announced.add(key)
                self._emit("CONTACT_PREDICTED", station=p.station, aos_in_s=max(0.0, p.aos_unix_s - now),
                           duration_s=p.duration_s, max_elevation_deg=p.max_elevation_deg)
        if len(self._announced) > 1000:  # bounded: forget passes long gone
            self._announced = {k for k in self._announced if k[1] * 60 > now - SPAN_S}

    def _predict_if_due(self) -> bool:
        """Predict again if the orbit changed, UTC stepped or REPREDICT_S passed; False where there is nothing to
        predict (no stations, no orbit: no passes). Telemetry asks too, as housekeeping runs before the control
        tick in a turn (found in audit: the first HK packet after a SET_TLE or a step of UTC gave the old
        prediction's AOS, an hour off)."""
        orbit = self._orbit()
        if not self.stations or orbit is None:
            self.passes = []
            return False
        mono, now = self._clock.monotonic_s(), self._clock.now_s()
        # UTC moved unlike the monotonic clock since the prediction (found in audit: after a step of days, the
        # channels said no pass, or one a day off, for up to REPREDICT_S)
        stepped = abs(now - (self._predicted_utc_s + (mono - self._predicted_at))) > JUMP_TOLERANCE_S
        if orbit is not self._predicted_for or mono - self._predicted_at >= REPREDICT_S or stepped:
            self._predicted_for, self._predicted_at, self._predicted_utc_s = orbit, mono, now
            self.passes = []
            # From a pass's length back: a pass under way has its true AOS, the key it was announced by (found in
            # audit: predicted from now, its AOS was now, and each prediction during it announced it again).
            start, span_s = now - LOOKBACK_S, LOOKBACK_S + SPAN_S
            for _ in range(2):
                try:
                    self.passes = predict_passes(orbit, self.stations, start, span_s)
                    break
                except PropagationError as exc:  # the elements or the clock, no fault of the software (the controller
                    # says ORBIT_UNPREDICTABLE): the passes up to where sgp4 fails (found in audit: an internal
                    # error and a fault at each prediction, and SAFE by repeated faults)
                    span_s = exc.time_unix_s - start - PROPAGATION_MARGIN_S
                    if span_s <= 0.0:
                        break
                except Exception as exc:  # noqa: BLE001 - a bug must not stop the agent
                    self._internal_error("pass prediction", exc)
                    break
        return True

    def telemetry(self) -> dict[str, Any]:
        if not self._predict_if_due() or not self.passes:
            return {"next_aos_in_s": None, "next_los_in_s": None, "next_pass_station": ""}
        times = contact_times(self.passes, self._clock.now_s())
        return {"next_aos_in_s": None if times.aos_in_s is None else round(times.aos_in_s, 3),
                "next_los_in_s": None if times.los_in_s is None else round(times.los_in_s, 3),
                "next_pass_station": times.station or ""}
