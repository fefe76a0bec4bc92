"""Orbit knowledge for the agent: propagate the TLE, find the Sun, the shadow and the SAA.

Pure logic (numpy + sgp4), no I/O, vectorised over time arrays, so the flight agent and
the HIL harness's profile generator share it. Times are UTC Unix seconds; positions are
km in TEME unless a name says otherwise.

Modules: ``elements`` (Orbit, TLE checks), ``frames`` (time, GMST, TEME -> Earth-fixed,
geodetic), ``sun``, ``shadow``, ``saa``, ``predict`` (passes and the telemetry summary).
"""

from flight.orbit.elements import (
    TLE_VALID_AFTER_EPOCH_S,
    TLE_VALID_BEFORE_EPOCH_S,
    Orbit,
    PropagationError,
    TleError,
    sun_synchronous_inc_deg,
    tle_checksum,
    tle_current,
)
from flight.orbit.frames import geodetic_from_ecef, geodetic_from_teme, gmst_rad, jd_utc_from_unix, teme_to_ecef
from flight.orbit.predict import (
    OrbitPrediction,
    Pass,
    PassKind,
    in_eclipse_now,
    in_saa_now,
    next_eclipse,
    next_saa,
    predict_passes,
    predict_summary,
)
from flight.orbit.saa import in_saa
from flight.orbit.shadow import beta_angle_deg, eclipse_fraction_cylindrical, max_eclipse_free_beta_deg, shadow_factor
from flight.orbit.sun import raan_deg_for_ltan, sun_direction_teme, sun_position_teme_km

__all__ = [
    "Orbit",
    "OrbitPrediction",
    "Pass",
    "PassKind",
    "PropagationError",
    "TleError",
    "beta_angle_deg",
    "eclipse_fraction_cylindrical",
    "geodetic_from_ecef",
    "geodetic_from_teme",
    "gmst_rad",
    "in_eclipse_now",
    "in_saa",
    "in_saa_now",
    "jd_utc_from_unix",
    "max_eclipse_free_beta_deg",
    "next_eclipse",
    "next_saa",
    "predict_passes",
    "predict_summary",
    "raan_deg_for_ltan",
    "shadow_factor",
    "sun_direction_teme",
    "sun_position_teme_km",
    "sun_synchronous_inc_deg",
    "teme_to_ecef",
    "tle_checksum",
    "tle_current",
    "TLE_VALID_AFTER_EPOCH_S",
    "TLE_VALID_BEFORE_EPOCH_S",
]
