"""Spacecraft physics for the HIL harness: solar array, battery, board thermal, Earth environment.

Pure numpy logic, no I/O: data in, data out. Orbit geometry comes from ``flight.orbit``
(the same code the agent flies), not from here.
"""

from hil.physics.battery import Battery, BatteryParams, BatteryStep, delivered_solar_w, gauge_pct
from hil.physics.environment import (
    EARTH_ALBEDO,
    EARTH_IR_W_M2,
    albedo_flux_w_m2,
    earth_ir_flux_w_m2,
    nadir_plate_view_factor,
)
from hil.physics.solar import (
    ATTITUDES,
    SOLAR_CONSTANT_W_M2,
    array_incidence_cos,
    array_power_w,
    body_axes_teme,
    orbit_frame_to_teme,
    panel_incidence_cos,
    solar_array_power_w,
)
from hil.physics.thermal import STEFAN_BOLTZMANN_W_M2_K4, ThermalEnergy, ThermalModel, ThermalParams

__all__ = [
    "ATTITUDES",
    "Battery",
    "BatteryParams",
    "BatteryStep",
    "EARTH_ALBEDO",
    "EARTH_IR_W_M2",
    "SOLAR_CONSTANT_W_M2",
    "STEFAN_BOLTZMANN_W_M2_K4",
    "ThermalEnergy",
    "ThermalModel",
    "ThermalParams",
    "albedo_flux_w_m2",
    "array_incidence_cos",
    "array_power_w",
    "body_axes_teme",
    "delivered_solar_w",
    "earth_ir_flux_w_m2",
    "gauge_pct",
    "nadir_plate_view_factor",
    "orbit_frame_to_teme",
    "panel_incidence_cos",
    "solar_array_power_w",
]
