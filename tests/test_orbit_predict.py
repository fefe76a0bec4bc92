"""Pass prediction and the telemetry summary (flight/orbit/predict.py)."""

import dataclasses
import math
import time

import numpy as np
import pytest

from flight.orbit import (
    Orbit,
    OrbitPrediction,
    Pass,
    PassKind,
    in_eclipse_now,
    next_eclipse,
    predict_passes,
    predict_summary,
    raan_deg_for_ltan,
)
from flight.orbit.saa import ESTIMATE

START_UNIX_S = 1_700_000_000.0  # 2023-11-14T22:13:20Z
DAY_S = 86400.0


@pytest.fixture(scope="module")
def orbit():
    return Orbit.from_elements(550.0, 51.6, 30.0, START_UNIX_S)


def _eclipses(passes):
    return [p for p in passes if p.kind is PassKind.ECLIPSE]


def test_passes_alternate_and_do_not_overlap(orbit):
    passes = predict_passes(orbit, START_UNIX_S, DAY_S)
    assert [p.start_unix_s for p in passes] == sorted(p.start_unix_s for p in passes)
    for kind in PassKind:
        mine = [p for p in passes if p.kind is kind]
        assert len(mine) >= 5
        assert all(a.end_unix_s < b.start_unix_s for a, b in zip(mine, mine[1:]))
    eclipses = _eclipses(passes)
    # One eclipse per orbit at this beta (< 67 deg): 24 h / 95.65 min = 15.06 orbits.
    assert 15 <= len(eclipses) <= 16
    assert all(p.start_unix_s >= START_UNIX_S and p.end_unix_s <= START_UNIX_S + DAY_S for p in passes)


def test_eclipse_edges_are_refined_below_a_second(orbit):
    """The brief asks for < 1 s; the default tolerance makes it 0.05 s. Check both sides of each edge."""
    for p in _eclipses(predict_passes(orbit, START_UNIX_S, 4 * orbit.period_s))[:4]:
        if p.start_clipped or p.end_clipped:
            continue
        for edge_s, dark_after in ((p.start_unix_s, True), (p.end_unix_s, False)):
            assert in_eclipse_now(orbit, edge_s + 0.1) is dark_after
            assert in_eclipse_now(orbit, edge_s - 0.1) is not dark_after


def test_passes_under_way_at_the_window_edges_are_clipped_and_flagged(orbit):
    first = next(p for p in _eclipses(predict_passes(orbit, START_UNIX_S, 2 * orbit.period_s)) if not p.start_clipped)
    middle = 0.5 * (first.start_unix_s + first.end_unix_s)
    window = predict_passes(orbit, middle, first.end_unix_s - middle + 60.0, kinds=(PassKind.ECLIPSE,))
    assert window[0] == Pass(PassKind.ECLIPSE, middle, window[0].end_unix_s, start_clipped=True)
    assert window[0].end_unix_s == pytest.approx(first.end_unix_s, abs=0.1)

    window = predict_passes(orbit, first.start_unix_s - 60.0, 120.0, kinds=(PassKind.ECLIPSE,))
    (p,) = window
    assert p.end_clipped and not p.start_clipped and p.end_unix_s == first.start_unix_s + 60.0


def test_next_eclipse_returns_the_one_under_way_with_its_true_start(orbit):
    upcoming = next_eclipse(orbit, START_UNIX_S + 10.0)
    inside = 0.5 * (upcoming.start_unix_s + upcoming.end_unix_s)
    current = next_eclipse(orbit, inside)
    assert not current.start_clipped
    assert current.start_unix_s == pytest.approx(upcoming.start_unix_s, abs=0.1)
    after = next_eclipse(orbit, upcoming.end_unix_s + 1.0)
    assert after.start_unix_s > upcoming.end_unix_s + orbit.period_s / 2.0


def test_summary_agrees_with_the_passes(orbit):
    eclipse = next(p for p in _eclipses(predict_passes(orbit, START_UNIX_S, DAY_S)) if not p.start_clipped)
    now = eclipse.start_unix_s - 600.0
    summary = predict_summary(orbit, now, saa_drift=ESTIMATE)
    assert isinstance(summary, OrbitPrediction)
    with pytest.raises(dataclasses.FrozenInstanceError):
        summary.in_eclipse = True
    assert summary.tle_age_s == now - START_UNIX_S
    assert not summary.in_eclipse and summary.shadow_factor == 1.0
    # Edges agree to the bisection tolerance (each call bisects on its own grid).
    assert summary.to_eclipse_entry_s == pytest.approx(600.0, abs=0.1)
    assert summary.to_eclipse_exit_s == pytest.approx(600.0 + eclipse.duration_s, abs=0.1)
    assert summary.eclipse_duration_s == pytest.approx(eclipse.duration_s, abs=0.1)
    # Eclipses at 550 km last at most 35.6 min (beta = 0, FACTS.md).
    assert 0.0 < summary.eclipse_duration_s < 35.7 * 60.0
    assert summary.to_saa_entry_s > 0.0 and summary.to_saa_exit_s > 0.0
    assert -90.0 <= summary.beta_deg <= 90.0

    # Step just inside the eclipse: the summary now counts the *next* entry and this
    # eclipse's exit, and keeps this eclipse's full (not clipped) duration.
    inside = predict_summary(orbit, eclipse.start_unix_s + 1.0, saa_drift=ESTIMATE)
    assert inside.in_eclipse and inside.shadow_factor == 0.0
    assert inside.to_eclipse_exit_s == pytest.approx(eclipse.duration_s - 1.0, abs=0.1)
    assert inside.eclipse_duration_s == pytest.approx(eclipse.duration_s, abs=0.1)
    assert inside.to_eclipse_entry_s > inside.to_eclipse_exit_s + orbit.period_s / 2.0


@pytest.mark.req("RAD-107")
def test_inside_a_pass_the_next_entry_comes_with_the_next_passes_duration_not_this_ones(orbit):
    """Found in audit: SAA_PREDICTED paired the next entry with the duration of the pass under way (4 of 5
    announcements off by more than 2 s on the ISS's orbit); eclipses alike, hidden by their similar lengths."""
    passes = predict_passes(orbit, START_UNIX_S, DAY_S)
    for kind in PassKind:
        mine = [p for p in passes if p.kind is kind and not (p.start_clipped or p.end_clipped)]
        for current, following in list(zip(mine, mine[1:]))[:4]:
            inside = predict_summary(orbit, current.start_unix_s + 1.0, saa_drift=ESTIMATE)
            entry, next_s, this_s = ((inside.to_eclipse_entry_s, inside.next_eclipse_duration_s, inside.eclipse_duration_s)
                                     if kind is PassKind.ECLIPSE else
                                     (inside.to_saa_entry_s, inside.next_saa_duration_s, inside.saa_duration_s))
            assert entry == pytest.approx(following.start_unix_s - current.start_unix_s - 1.0, abs=0.2)
            assert next_s == pytest.approx(following.duration_s, abs=0.2)
            assert this_s == pytest.approx(current.duration_s, abs=0.2)


def test_inside_a_grazing_shadow_shorter_than_a_step_the_summary_gives_its_own_exit():
    """Found in audit: near the no-eclipse beta, a shadow shorter than the 30 s search step was missed by the
    pass list while ``in_eclipse`` (the state at now) saw it: in eclipse, with the next orbit's exit an orbit
    away, and the power rule planned for a 98-minute night. Now is a sample of the search."""
    from flight.orbit.predict import eclipse_mask

    t0 = 1_795_000_000.0
    t = t0 + np.arange(0.0, 2 * 3600.0, 0.5)

    def umbra(raan: float) -> np.ndarray:
        return eclipse_mask(Orbit.from_elements(550.0, 51.6, raan, t0), t)

    lo, hi = next((r, r + 1.0) for r in np.arange(0.0, 360.0, 1.0) if (umbra(r).sum() == 0) != (umbra(r + 1.0).sum() == 0))
    lo, hi = (lo, hi) if umbra(lo).sum() == 0 else (hi, lo)
    for _ in range(60):  # to a shadow of 4 to 20 s
        mid = 0.5 * (lo + hi)
        n = umbra(mid).sum() / 2.0
        if 4.0 <= n <= 20.0:
            break
        lo, hi = (mid, hi) if n < 4.0 else (lo, mid)
    dark = t[umbra(mid)]
    orbit = Orbit.from_elements(550.0, 51.6, mid, t0)
    for now in np.linspace(dark[0] + 0.3, dark[-1] - 0.3, 5):
        summary = predict_summary(orbit, float(now), 86400.0, saa_drift=ESTIMATE)
        assert summary.in_eclipse
        assert summary.to_eclipse_exit_s == pytest.approx(dark[-1] + 0.25 - now, abs=0.6)
        assert summary.eclipse_duration_s < 30.0 < summary.to_eclipse_entry_s


def test_inside_a_grazing_shadow_shorter_than_a_step_next_eclipse_gives_that_shadow():
    """Found in audit: next_eclipse, "the eclipse under way at now", searched from one orbit back, so now was
    no sample of its 30 s grid; inside a 15 s grazing shadow (in_eclipse_now true) it gave the next orbit's
    shadow, 94 minutes ahead. Its look-back is now whole steps, as predict_summary's is."""
    from flight.orbit.predict import eclipse_mask

    # The RAAN the summary's grazing-shadow test above finds by search (the edge of the eclipse season at t0),
    # given here to keep this test fast; the shadow's length is checked, so a change of model shows.
    t0 = 1_795_000_000.0
    orbit = Orbit.from_elements(550.0, 51.6, 128.716796875, t0)
    t = t0 + np.arange(4800.0, 5100.0, 0.5)
    dark = t[eclipse_mask(orbit, t)]
    assert 4.0 <= dark.size / 2.0 <= 20.0 and np.all(np.diff(dark) == 0.5)  # one shadow, shorter than a step
    for now in np.linspace(dark[0] + 0.3, dark[-1] - 0.3, 5):
        assert in_eclipse_now(orbit, float(now))
        current = next_eclipse(orbit, float(now))
        assert current is not None and current.contains(float(now))
        assert current.end_unix_s == pytest.approx(dark[-1] + 0.25, abs=0.6)


@pytest.mark.parametrize("step_s", [0.0, -30.0, math.nan, math.inf])
def test_a_step_that_is_not_a_positive_number_is_refused_naming_it(orbit, step_s):
    """Found in audit: step_s=0 raised ZeroDivisionError ("float division by zero") from predict_summary and
    next_eclipse, and an infinite step gave predict_passes a grid of one sample and a made-up pass."""
    with pytest.raises(ValueError, match="step_s must be"):
        predict_summary(orbit, START_UNIX_S, step_s=step_s, saa_drift=ESTIMATE)
    with pytest.raises(ValueError, match="step_s must be"):
        next_eclipse(orbit, START_UNIX_S, step_s=step_s)
    with pytest.raises(ValueError, match="step_s must be"):
        predict_passes(orbit, START_UNIX_S, DAY_S, step_s)


def test_summary_without_eclipse_reads_nan_and_compares_false():
    # A polar orbit with its node 80 deg east of the Sun at the equinox has beta ~ 80 deg,
    # above the 67 deg limit at 550 km: no eclipse for days.
    equinox_unix_s = 1_710_892_800.0  # 2024-03-20T00:00Z
    high_beta = Orbit.from_elements(550.0, 90.0, raan_deg_for_ltan(18.0, equinox_unix_s) - 10.0, equinox_unix_s)
    summary = predict_summary(high_beta, equinox_unix_s, saa_drift=ESTIMATE)
    assert summary.beta_deg > 70.0
    assert not summary.in_eclipse and summary.shadow_factor == 1.0
    assert math.isnan(summary.to_eclipse_entry_s) and math.isnan(summary.eclipse_duration_s)
    assert not summary.to_eclipse_entry_s < 120.0  # "no eclipse soon" is the safe reading
    assert next_eclipse(high_beta, equinox_unix_s) is None


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(horizon_s=0.0), "horizon_s must be positive"),
        (dict(step_s=-30.0), "step_s must be positive"),
        (dict(shadow_model="penumbral"), "unknown shadow model"),
        (dict(tolerance_s=0.0), "tolerance_s must be positive"),
    ],
)
def test_bad_arguments_are_refused(orbit, kwargs, words):
    args = dict(start_unix_s=START_UNIX_S, horizon_s=DAY_S) | kwargs
    with pytest.raises(ValueError, match=words):
        predict_passes(orbit, **args)


def test_pass_refuses_negative_duration():
    with pytest.raises(ValueError, match="ends"):
        Pass(PassKind.SAA, 10.0, 5.0)


def test_cost_of_a_24_hour_prediction(orbit, monkeypatch):
    """Must be cheap enough to run every few minutes on a Jetson CPU.

    Counts sgp4 propagations and times the call. 24 h at 30 s is 2881 samples, plus ~10
    bisection rounds over ~60 edges: < 4000 propagations. The time bound (0.5 s) is ~100x
    what this takes on an x86 CI core, to stay clear of slow runners; the measured figure
    is printed (pytest -s).
    """
    counted = []
    real = Orbit.propagate

    def counting(self, time_unix_s):
        counted.append(np.size(time_unix_s))
        return real(self, time_unix_s)

    monkeypatch.setattr(Orbit, "propagate", counting)
    passes = predict_passes(orbit, START_UNIX_S, DAY_S)
    monkeypatch.undo()
    assert sum(counted) < 4000
    best_s = min(_timed(lambda: predict_passes(orbit, START_UNIX_S, DAY_S)) for _ in range(5))
    summary_s = min(_timed(lambda: predict_summary(orbit, START_UNIX_S, saa_drift=ESTIMATE)) for _ in range(5))
    print(f"\n24 h prediction: {len(passes)} passes, {sum(counted)} propagations in {len(counted)} calls, "
          f"{best_s * 1e3:.1f} ms; predict_summary (24 h + 1 orbit back) {summary_s * 1e3:.1f} ms")
    # Speed is reported, not asserted (timings belong in bench/): the bound above is the work done.


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
