"""Orbit profiles for the HIL harness: generate them from an orbit, write and read them, check them.

    from hil.profiles import generate_profile, write_profile, read_profile, replay_check

``format`` declares the columns (each with its unit) and holds the one validation every
profile goes through; ``generate`` builds profiles with ``flight.orbit`` and
``hil.physics``; ``radiation`` looks trapped-particle flux up in the shipped AP8/AE8 map.
Shipped profiles: ``hil/data/profiles/{sso_550,iss_51_6,dawn_dusk}.parquet``.
"""

from hil.profiles.format import (
    COLUMN_NAMES,
    COLUMNS,
    REQUIRED_COLUMNS,
    ColumnSpec,
    Profile,
    ProfileError,
    describe_columns,
    read_profile,
    validate_profile,
    write_profile,
)
from hil.profiles.generate import (
    DEFAULT_STATIONS,
    SHIPPED,
    SHIPPED_DIR,
    GroundStation,
    SpacecraftParams,
    add_generate_arguments,
    build_shipped_profiles,
    elevation_deg,
    generate_cli,
    generate_profile,
    load_or_generate,
    orbit_from_description,
    parse_epoch,
    regenerate,
    replay_check,
)
from hil.profiles.radiation import (
    RadiationParams,
    RadiationTrack,
    TrappedFluxMap,
    load_flux_map,
    radiation_along_track,
)

__all__ = [
    "COLUMNS",
    "COLUMN_NAMES",
    "ColumnSpec",
    "DEFAULT_STATIONS",
    "GroundStation",
    "Profile",
    "ProfileError",
    "REQUIRED_COLUMNS",
    "RadiationParams",
    "RadiationTrack",
    "SHIPPED",
    "SHIPPED_DIR",
    "SpacecraftParams",
    "TrappedFluxMap",
    "add_generate_arguments",
    "build_shipped_profiles",
    "describe_columns",
    "elevation_deg",
    "generate_cli",
    "generate_profile",
    "load_flux_map",
    "load_or_generate",
    "orbit_from_description",
    "parse_epoch",
    "radiation_along_track",
    "read_profile",
    "regenerate",
    "replay_check",
    "validate_profile",
    "write_profile",
]
