"""An orbit the agent can propagate: a frozen wrapper around an sgp4 ``Satrec``.

Two ways in, both classmethods (as skyfield's ``EarthSatellite.from_satrec``):

- :meth:`Orbit.from_tle` for the TLE the ground uplinks. sgp4's parser is lenient
  (its C++ ``twoline2rv`` accepts a truncated line without complaint), so the lines are
  checked here first: length, line numbers, checksums, matching catalogue numbers.
- :meth:`Orbit.from_elements` for a made-up circular (or not) orbit: tests, the HIL
  harness's profile generator, "what if" studies.

Out comes TEME position and velocity for arrays of Unix times (:meth:`Orbit.propagate`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from sgp4.api import SGP4_ERRORS, WGS72, Satrec

from flight.orbit.frames import SECONDS_PER_DAY, jd_utc_from_unix, unix_from_jd_utc

TLE_LINE_LENGTH = 69
"""Characters in a TLE line, checksum included (CelesTrak, "NORAD Two-Line Element Set Format")."""

SGP4_EPOCH_JD = 2433281.5
"""sgp4init counts its epoch in days from 1949-12-31 00:00 UTC (Vallado et al. 2006)."""

# sgp4's WGS-72 constants, what TLEs are fitted with (Vallado et al. 2006, "Revisiting
# Spacetrack Report #3"); using them here keeps from_elements consistent with sgp4init(WGS72).
WGS72_MU_KM3_S2 = 398600.8
WGS72_RADIUS_KM = 6378.135

# For the sun-synchronous inclination only.
EARTH_J2 = 1.08262668e-3  # WGS-84 / EGM96 value; WGS-72 differs by ~1e-5 relative, irrelevant here
TROPICAL_YEAR_S = 365.2421897 * SECONDS_PER_DAY


class TleError(ValueError):
    """A TLE that cannot be trusted. ``line_no`` is 1 or 2 (0: the pair as a whole)."""

    def __init__(self, line_no: int, reason: str, line: str = ""):
        self.line_no = line_no
        self.reason = reason
        self.line = line
        where = f"TLE line {line_no}" if line_no else "TLE"
        shown = f"\n  {line!r}" if line else ""
        super().__init__(f"{where}: {reason}; ask the ground for a fresh element set{shown}")


class PropagationError(RuntimeError):
    """sgp4 could not propagate: the numbers carry sgp4's own error code and when it failed."""

    def __init__(self, code: int, time_unix_s: float, epoch_unix_s: float, satnum: int):
        self.code = int(code)
        self.time_unix_s = float(time_unix_s)
        self.epoch_unix_s = float(epoch_unix_s)
        self.satnum = satnum
        message = SGP4_ERRORS.get(self.code, "unknown sgp4 error")
        age_d = (self.time_unix_s - self.epoch_unix_s) / SECONDS_PER_DAY
        super().__init__(
            f"sgp4 error {self.code} for satellite {satnum} at t={self.time_unix_s:.3f} "
            f"(unix s, {age_d:+.2f} days from epoch): {message}. "
            "Elements this far from their epoch are not usable; uplink a newer TLE."
        )


FIRST_ORBIT_SAMPLES = 129
"""Times :meth:`Orbit.from_tle` propagates a new TLE at over its first orbit (every 45 s in LEO): sgp4 says a
decay (its error 6) only at a time it is asked for."""

TLE_VALID_AFTER_EPOCH_S = 14 * 86400.0
"""A TLE older than this predicts no radiation environment (flight/agent/compute.py: radiation_estimate
gives UNKNOWN, the compute worker's cautious case). sgp4's along-track error grows by kilometres a
day in LEO: 30-day-old elements with a drag term 30 % off disagreed on 26 of a day's 92 SAA minutes
(found in review); ``tle_age_s`` warns at 7 days."""
TLE_VALID_BEFORE_EPOCH_S = 86400.0
"""A clock more than this before the TLE's epoch is wrong (a board that booted with no time), not a TLE
from the future: no prediction from it either (found in review: a clock at 1970 predicted the SAA).
The eclipse and pass predictions for power and contacts still use such a TLE: ``tle_age_s`` shows its age."""
def tle_current(epoch_unix_s: float, now_unix_s: float) -> bool:
    """Whether a TLE of ``epoch_unix_s`` predicts anything at ``now_unix_s`` (:data:`TLE_VALID_AFTER_EPOCH_S`,
    :data:`TLE_VALID_BEFORE_EPOCH_S`); a non-finite time never does."""
    age_s = float(now_unix_s) - float(epoch_unix_s)
    return math.isfinite(age_s) and -TLE_VALID_BEFORE_EPOCH_S <= age_s <= TLE_VALID_AFTER_EPOCH_S


def tle_checksum(line: str) -> int:
    """Modulo-10 checksum of a TLE line's first 68 characters: digits count their value, '-' counts 1.

    The ISS element set printed on Wikipedia's "Two-line element set" page ends in 7:

    >>> tle_checksum('1 25544U 98067A   08264.51782528 -.00002182  00000-0 -11606-4 0  2927')
    7
    """
    total = 0
    for ch in line[: TLE_LINE_LENGTH - 1]:
        if ch.isdigit():
            total += int(ch)
        elif ch == "-":
            total += 1
    return total % 10


# Numeric fields, (name, first column, last column) 1-based inclusive as in the CelesTrak format
# description. sgp4's C++ parser reads them with sscanf and silently takes "15.7212539X" as
# 15.7212539, so each is checked here.
_FLOAT_FIELDS = {
    1: (("epoch", 19, 32), ("first derivative of mean motion", 34, 43)),
    2: (
        ("inclination", 9, 16),
        ("right ascension of the ascending node", 18, 25),
        ("argument of perigee", 35, 42),
        ("mean anomaly", 44, 51),
        ("mean motion", 53, 63),
    ),
}
# Fields written with an implied leading decimal point and a power-of-ten exponent: " 12345-6".
_EXPONENT_FIELDS = {1: (("second derivative of mean motion", 45, 52), ("BSTAR drag term", 54, 61))}
_EXPONENT_FIELD = re.compile(r"^[ +-]?\d{5}[+-]\d$")
# The ranges the format allows (CelesTrak's description): Python's float() also reads "nan" and
# "inf", which sgp4 then propagates into a NaN position, read downstream as "sunlit, no eclipse".
_FIELD_RANGES = {
    "inclination": (0.0, 180.0),
    "right ascension of the ascending node": (0.0, 360.0),
    "argument of perigee": (0.0, 360.0),
    "mean anomaly": (0.0, 360.0),
}
_DIGIT_FIELDS = {1: (("catalogue number", 3, 7),), 2: (("catalogue number", 3, 7), ("eccentricity", 27, 33))}


def _check_fields(line: str, line_no: int) -> None:
    for name, first, last in _FLOAT_FIELDS.get(line_no, ()):
        text = line[first - 1 : last]
        try:
            value = float(text)
        except ValueError:
            raise TleError(line_no, f"{name} (columns {first}-{last}) is not a number: {text!r}", line) from None
        if not math.isfinite(value):
            raise TleError(line_no, f"{name} (columns {first}-{last}) is not a finite number: {text!r}", line)
        low, high = _FIELD_RANGES.get(name, (-math.inf, math.inf))
        if not low <= value <= high:
            raise TleError(line_no, f"{name} (columns {first}-{last}) is {value:g}, outside {low:g} to {high:g} "
                           "degrees", line)
        if name == "epoch" and not 1.0 <= value % 1000.0 < 367.0:  # YYDDD.dddddddd: day 1 is 1 January
            raise TleError(line_no, f"epoch (columns {first}-{last}): day of the year {value % 1000.0:g} is not "
                           "from 1 to 366", line)
    for name, first, last in _EXPONENT_FIELDS.get(line_no, ()):
        text = line[first - 1 : last]
        if not _EXPONENT_FIELD.match(text):
            raise TleError(line_no, f"{name} (columns {first}-{last}) is not of the form ' 12345-6': {text!r}", line)
    for name, first, last in _DIGIT_FIELDS.get(line_no, ()):
        text = line[first - 1 : last]
        if name == "catalogue number":
            # Old sets pad with spaces ("    5"), new ones may be Alpha-5 ("A1234"); sgp4 reads both.
            text = text.strip()
            if text.isdigit() or (len(text) == 5 and text[0].isalpha() and text[1:].isdigit()):
                continue
        if not text.isdigit():
            raise TleError(line_no, f"{name} (columns {first}-{last}) must be digits: {text!r}", line)


def _check_tle_line(line: str, line_no: int) -> str:
    if not isinstance(line, str):
        raise TleError(line_no, f"expected a string, got {type(line).__name__}")
    line = line.rstrip("\r\n ")
    if len(line) != TLE_LINE_LENGTH:
        raise TleError(line_no, f"expected {TLE_LINE_LENGTH} characters, got {len(line)}", line)
    if not line.isascii():
        raise TleError(line_no, "contains non-ASCII characters", line)
    if line[0] != str(line_no) or line[1] != " ":
        raise TleError(line_no, f"must start with '{line_no} ', starts with {line[:2]!r}", line)
    if not line[-1].isdigit():
        raise TleError(line_no, f"last character must be the checksum digit, got {line[-1]!r}", line)
    expected = tle_checksum(line)
    if int(line[-1]) != expected:
        raise TleError(line_no, f"checksum is {line[-1]}, the line sums to {expected}", line)
    _check_fields(line, line_no)
    return line


@dataclass(frozen=True, eq=False)
class Orbit:
    """A propagatable orbit. Build it with :meth:`from_tle` or :meth:`from_elements`.

    ``satrec`` is sgp4's own object; treat it as read-only (sgp4 writes only its error
    fields while propagating). Equality is identity, as for the ``Satrec`` inside.
    """

    satrec: Satrec
    name: str = ""

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_tle(cls, line1: str, line2: str, name: str = "") -> "Orbit":
        """Parse and check a two-line element set. Raises :class:`TleError` saying what is wrong."""
        line1 = _check_tle_line(line1, 1)
        line2 = _check_tle_line(line2, 2)
        if line1[2:7] != line2[2:7]:
            raise TleError(0, f"catalogue numbers differ: line 1 has {line1[2:7]!r}, line 2 has {line2[2:7]!r}")
        try:
            satrec = Satrec.twoline2rv(line1, line2, WGS72)
        except (ValueError, IndexError) as exc:  # sgp4's own field checks
            raise TleError(0, f"sgp4 could not parse it ({exc})") from exc
        if satrec.error:
            raise TleError(0, f"sgp4 refused the elements: error {satrec.error}, {SGP4_ERRORS.get(satrec.error)}")
        if not satrec.no_kozai > 0.0:
            raise TleError(2, f"mean motion must be positive, got {satrec.no_kozai} rad/min", line2)
        orbit = cls(satrec, name)
        orbit._check_first_orbit()
        return orbit

    def _check_first_orbit(self) -> None:
        """TleError unless sgp4 propagates the elements through one orbit from their epoch. sgp4init checks the
        epoch's position alone, so a perigee inside the Earth passed (found in audit: eccentricity 0.9 at 15.7
        rev/day was taken by the configuration and SET_TLE, then every prediction failed "this far from the
        epoch", 10 minutes after it). A satellite the ground can still command is not on such an orbit."""
        perigee_alt_km = self.semi_major_axis_km * (1.0 - self.eccentricity) - WGS72_RADIUS_KM
        if perigee_alt_km < 0.0:
            rev_per_day = self.mean_motion_rad_s * SECONDS_PER_DAY / (2.0 * np.pi)
            raise TleError(2, f"perigee {perigee_alt_km:.0f} km, below the Earth's surface (eccentricity "
                           f"{self.eccentricity:g}, mean motion {rev_per_day:.8f} rev/day)")
        t = self.epoch_unix_s + np.linspace(0.0, self.period_s, FIRST_ORBIT_SAMPLES)
        try:
            self.propagate(t)
        except PropagationError as exc:
            raise TleError(0, f"sgp4 cannot propagate it through its first orbit: error {exc.code} "
                           f"({SGP4_ERRORS.get(exc.code, 'unknown')}) {exc.time_unix_s - self.epoch_unix_s:.0f} s "
                           "after its epoch") from None

    @classmethod
    def from_elements(
        cls,
        alt_km: float,
        inc_deg: float,
        raan_deg: float,
        epoch_unix_s: float,
        ecc: float = 0.0,
        argp_deg: float = 0.0,
        mean_anomaly_deg: float = 0.0,
        *,
        bstar_per_earth_radius: float = 0.0,
        satnum: int = 99999,
        name: str = "",
    ) -> "Orbit":
        """An orbit from mean elements, via ``sgp4init`` (WGS-72, improved mode 'i').

        ``alt_km`` sets the semi-major axis a = R_E + alt_km (WGS-72 R_E = 6378.135 km) and
        from it the mean motion n = sqrt(mu / a^3) (Kepler's third law), which goes into
        sgp4 as the Kozai mean motion, the quantity a TLE carries. sgp4's J2 terms then
        make the instantaneous altitude wander by ~10 km about ``alt_km`` and the nodal
        period differ from 2*pi/n by ~0.1 %. ``bstar_per_earth_radius`` is 0 by default:
        no drag, the orbit never decays.
        """
        # sgp4init takes NaN and inf without an error and propagates them into NaN positions, which read downstream
        # as "sunlit, outside the SAA, no pass" (found in audit: raan_deg=nan gave an orbit); the range checks below
        # let a NaN through, as any comparison with it is False.
        for key, value in (("alt_km", alt_km), ("inc_deg", inc_deg), ("raan_deg", raan_deg),
                           ("epoch_unix_s", epoch_unix_s), ("ecc", ecc), ("argp_deg", argp_deg),
                           ("mean_anomaly_deg", mean_anomaly_deg), ("bstar_per_earth_radius", bstar_per_earth_radius)):
            if not math.isfinite(value):
                raise ValueError(f"{key} must be a finite number, got {value!r}")
        if not 0.0 <= ecc < 1.0:
            raise ValueError(f"eccentricity must be in [0, 1), got {ecc}")
        if not 0.0 <= inc_deg <= 180.0:
            raise ValueError(f"inclination must be in [0, 180] deg, got {inc_deg}")
        a_km = WGS72_RADIUS_KM + alt_km
        perigee_alt_km = a_km * (1.0 - ecc) - WGS72_RADIUS_KM
        if perigee_alt_km <= 100.0:
            raise ValueError(
                f"perigee altitude {perigee_alt_km:.1f} km (alt_km={alt_km}, ecc={ecc}) is below 100 km; "
                "sgp4 cannot propagate that"
            )
        n_rad_min = np.sqrt(WGS72_MU_KM3_S2 / a_km**3) * 60.0
        jd, fr = jd_utc_from_unix(epoch_unix_s)
        satrec = Satrec()
        satrec.sgp4init(
            WGS72,
            "i",
            int(satnum),
            float((jd - SGP4_EPOCH_JD) + fr),
            float(bstar_per_earth_radius),
            0.0,  # ndot: unused by sgp4 propagation
            0.0,  # nddot: unused by sgp4 propagation
            float(ecc),
            float(np.radians(argp_deg)),
            float(np.radians(inc_deg)),
            float(np.radians(mean_anomaly_deg)),
            float(n_rad_min),
            float(np.radians(raan_deg)),
        )
        if satrec.error:
            raise ValueError(f"sgp4init refused the elements: error {satrec.error}, {SGP4_ERRORS.get(satrec.error)}")
        return cls(satrec, name)

    # ----------------------------------------------------------------- properties
    @property
    def satnum(self) -> int:
        return int(self.satrec.satnum)

    @property
    def epoch_unix_s(self) -> float:
        """Epoch of the elements, UTC Unix seconds."""
        return float(unix_from_jd_utc(self.satrec.jdsatepoch, self.satrec.jdsatepochF))

    @property
    def mean_motion_rad_s(self) -> float:
        """Kozai mean motion as the TLE carries it, rad/s."""
        return self.satrec.no_kozai / 60.0

    @property
    def period_s(self) -> float:
        """Keplerian period 2*pi/n for the TLE's mean motion, s.

        For a from_elements orbit this is exactly 2*pi*sqrt(a^3/mu). The time between
        ascending nodes seen in propagation differs by J2 effects of order
        1.5*J2*(R/a)^2 ~ 0.14 % (~8 s at 550 km).
        """
        return 2.0 * np.pi / self.mean_motion_rad_s

    @property
    def semi_major_axis_km(self) -> float:
        """Mean semi-major axis from the mean motion and WGS-72 mu (Kepler's third law), km."""
        return float(np.cbrt(WGS72_MU_KM3_S2 / self.mean_motion_rad_s**2))

    @property
    def inclination_deg(self) -> float:
        return float(np.degrees(self.satrec.inclo))

    @property
    def eccentricity(self) -> float:
        return float(self.satrec.ecco)

    # ----------------------------------------------------------------- propagation
    def propagate(self, time_unix_s) -> tuple[np.ndarray, np.ndarray]:
        """TEME position (km) and velocity (km/s) at UTC Unix times, shape ``time.shape + (3,)``.

        One ``Satrec.sgp4_array`` call for the whole array (sgp4's C++ loop). Raises
        :class:`PropagationError` naming the first time sgp4 failed at (decay, e >= 1).
        """
        time_unix_s = np.asarray(time_unix_s, dtype=float)
        flat = np.ascontiguousarray(time_unix_s.reshape(-1))
        jd, fr = jd_utc_from_unix(flat)
        err, r, v = self.satrec.sgp4_array(jd, fr)
        bad = np.flatnonzero(err)
        if bad.size:
            i = bad[0]
            raise PropagationError(err[i], flat[i], self.epoch_unix_s, self.satnum)
        shape = time_unix_s.shape + (3,)
        return r.reshape(shape), v.reshape(shape)


def sun_synchronous_inc_deg(alt_km: float, ecc: float = 0.0) -> float:
    """Inclination (deg) at which J2 turns the node 360 deg per tropical year.

    dOmega/dt = -1.5 n J2 (R/p)^2 cos i (secular J2 node rate, e.g. Vallado 4th ed. ch. 9),
    set to 2*pi / year with p = a (1 - e^2). 550 km circular gives 97.6 deg.
    """
    a_km = WGS72_RADIUS_KM + alt_km
    n_rad_s = np.sqrt(WGS72_MU_KM3_S2 / a_km**3)
    p_km = a_km * (1.0 - ecc**2)
    node_rate_rad_s = 2.0 * np.pi / TROPICAL_YEAR_S
    cos_i = -node_rate_rad_s / (1.5 * n_rad_s * EARTH_J2 * (WGS72_RADIUS_KM / p_km) ** 2)
    if not -1.0 <= cos_i <= 1.0:
        raise ValueError(f"no sun-synchronous inclination at {alt_km} km (cos i = {cos_i:.3f})")
    return float(np.degrees(np.arccos(cos_i)))
