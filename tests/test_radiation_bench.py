"""bench.radiation's scrub figures (the simulated clock and the latency bound they rest on) and the
models its overhead floors time."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bench import radiation
from flight.compute import abft
from flight.compute import worker as worker_module
from flight.link.definitions import FluxClass


@pytest.mark.req("RAD-102", "RAD-103")
def test_a_flipped_weight_is_repaired_within_one_saa_period_on_the_simulated_clock():
    real_time = worker_module.time
    figures = radiation.scrub_latency(FluxClass.SAA, 40, np.random.default_rng(1))
    # A full pass per 30 s period, a scrub_tick every 1 s: a flip waits at most one period for the
    # cursor, and the repair is seen at the next tick (the bound the scrubber's doc promises).
    assert figures["period_s"] == 30.0
    assert 0.0 < figures["p50_s"] <= figures["max_s"] <= 30.0 + radiation.SCRUB_TICK_S
    assert worker_module.time is real_time  # the worker's clock is put back after the run


def test_draw_byte_covers_every_owned_byte_in_proportion():
    names, ends = ("a", "b"), np.array([10, 40])
    rng = np.random.default_rng(2)
    drawn = [radiation.draw_byte(rng, names, ends) for _ in range(4000)]
    share_b = sum(name == "b" for name, _, _ in drawn) / len(drawn)
    assert abs(share_b - 0.75) < 0.03  # 30 of the 40 bytes
    assert all(0 <= byte < (10 if name == "a" else 30) and 0 <= bit < 8 for name, byte, bit in drawn)


@pytest.mark.req("RAD-001")
def test_the_read_floor_reads_what_the_checks_read_and_how_and_sums_it_right():
    """abft_overhead_read_floor's model: every tensor of the model's own that the checks read when they
    read their nodes' own inputs (recompute_inputs off; not h2, whose mean the model makes and the
    checks reuse), h1 and a1 with a GlobalAveragePool where the checks read them with a pooling (the
    NCHWc layout); a valid model whose added output is those tensors' sums."""
    shipped = onnx.load_from_string((radiation.MODELS_DIR / radiation.MODEL_FILE).read_bytes())
    plain, blocked = (radiation.checks_reads(abft.protect(shipped, nchwc=nchwc, recompute_inputs=False))
                      for nchwc in (False, True))
    assert list(plain) == ["xn", "a1", "h1", "a2", "pixel_logit", "hmean", "z", "logits"]
    assert set(plain.values()) == {"ReduceSum"} and blocked == {**plain, "h1": "GlobalAveragePool",
                                                                "a1": "GlobalAveragePool"}
    floor = radiation.tensors_summed(shipped, blocked)
    onnx.checker.check_model(floor, full_check=True)
    tiles = radiation.load_held_out().tiles[:5].astype(np.float32)
    session = ort.InferenceSession(floor.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    sums = session.run(["read/sums"], {"tiles": tiles})[0]
    inner = onnx.ModelProto()
    inner.CopyFrom(shipped)
    inner.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in ("xn", "h1"))
    xn, h1 = ort.InferenceSession(inner.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        ["xn", "h1"], {"tiles": tiles})
    assert names[-1] == "read/sums" and sums.shape == (5, 4 + 16 + 16 + 12 + 1 + 3)
    np.testing.assert_allclose(sums[:, :4], xn.sum(axis=(2, 3)), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(sums[:, 20:36], h1.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)


@pytest.mark.req("RAD-105")
def test_the_simulated_day_with_blind_checks_reports_corrupt_tiles_good_and_with_its_checks_none():
    """corrupt_results_reported_good's instrument has power: 20 steps at 1e4 times the SAA's rate, the
    same upsets flown with the checks as they are and with every flag read as passed (found in review:
    on some seeds a checker that never flagged scored 0 as well, and a run could crash the bench)."""
    track = radiation.day_track()
    saa = float(track.upsets_per_bit_s.max())
    short = radiation.DayTrack(track.time_unix_s[:20], np.full(20, saa), track.predicted[:20], track.profile_check_rel)
    real_flags = worker_module.check_flags
    ((_, real, blind),) = radiation.flown([5], 1e4, short)
    assert worker_module.check_flags is real_flags  # put back
    assert real.injected == blind.injected and real.injected_owned_model == blind.injected_owned_model > 0
    assert blind.corrupt_reported_good > 0 and real.corrupt_reported_good == 0
    assert real.jobs == blind.jobs == 20 and real.tiles == 20 * radiation.DAY_TILES_PER_STEP
    # What the 0 rests on: jobs, not tiles (an upset corrupts every job until it is repaired).
    # What the 0 rests on: the first job to run on an upset, not its tiles nor the jobs after it (flown blind,
    # an upset corrupts every job until the scrub comes; with the checks the first job scrubs it).
    trials = radiation.trials_of([(5, real, blind)])
    assert 0 < trials["trials_blind"] == blind.trials <= trials["jobs_corrupt_reported_good_blind"] <= 20
    assert trials["trials_blind"] <= trials["upsets_first_run_in_them_blind"] <= blind.injected_owned
    assert trials["jobs_corrupt_reported_good"] == 0
    assert trials["miss_rate_per_trial_upper_95"] == radiation.miss_rate_upper(blind.trials)


def test_the_miss_rate_bound_is_the_exact_one_sided_one_and_the_model_weights_day_hits_only_them():
    assert radiation.miss_rate_upper(0) is None and radiation.miss_rate_upper(1) == 0.95
    assert radiation.miss_rate_upper(100) == pytest.approx(0.0295, abs=1e-4)  # about 3 / n
    track = radiation.day_track()
    short = radiation.DayTrack(track.time_unix_s[:6], np.full(6, float(track.upsets_per_bit_s.max())),
                               track.predicted[:6], track.profile_check_rel)
    tally, _ = radiation.upset_day(3, 1e4, track=short, model_only=True)
    assert tally.injected > 0 and tally.injected == tally.injected_owned == tally.injected_owned_model
    assert tally.injected_golden == 0


@pytest.mark.req("RAD-001", "RAD-003")
def test_a_width_model_is_checked_whole_keeps_its_outputs_and_flags_a_flipped_weight():
    """abft_overhead_by_width's models: every Conv and the head checked, the protected model's
    probabilities those of the bare one, clean tiles passed, and a weight made huge in the owned buffer
    the session computes from flagged on the tiles it moves."""
    model, macs = radiation.model_of_width(8, np.random.default_rng(4), px=16)
    onnx.checker.check_model(model, full_check=True)
    # Output sides 16, 8, 4, 4 (3x3, padded by one, strides 1, 2, 2, 1), each weight once per output position.
    assert macs == 8 * 4 * 9 * 16 ** 2 + 8 * 8 * 9 * 8 ** 2 + 16 * 8 * 9 * 4 ** 2 + 16 * 16 * 9 * 4 ** 2
    protected = abft.protect(model)
    assert [c["output"] for c in abft.describe(protected)["checks"]] == ["h1_a", "h2_a", "h3_a", "h4_a", "logits"]
    x = np.random.default_rng(5).standard_normal((6, 4, 16, 16)).astype(np.float32)
    bare = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        ["probabilities"], {"x": x})[0]
    session, (arrays, _values) = radiation.cpu_session(protected.SerializeToString(), "owned", 1)
    y, ok = session.run(["probabilities", abft.OUTPUT], {"x": x})
    np.testing.assert_allclose(y, bare, rtol=1e-5, atol=1e-6)
    assert ok.all()
    w = arrays["h2_w"]
    w.view(np.uint32)[0, 0, 1, 1] ^= np.uint32(1 << 30)  # a weight under 2 in size times 2^128
    y, ok = session.run(["probabilities", abft.OUTPUT], {"x": x})
    moved = ~(np.abs(y - bare).max(axis=1) <= 1e-3)
    assert moved.any() and not ok[moved].any()


@pytest.mark.req("RAD-002", "RAD-003")
def test_the_width_figures_count_what_they_say_on_a_small_model():
    """width_figures, run small: its keys, the clean tiles it counts (none flagged), and every flip that
    mattered caught (the draws are seeded: some flips matter and some do not)."""
    figures = radiation.width_figures(3, widths=(8,), px=16, pairs=1, window_s=0.0, clean_batches=2, flips=40)
    row = figures["abft_overhead_by_width"]["8"]
    assert set(row) == {"all", "extended", "owned", "macs_per_tile", "false_alarms", "flips", "flips_consequential",
                        "flips_detected", "flagged_harmless"}
    assert row["macs_per_tile"] == radiation.model_of_width(8, np.random.default_rng(0), px=16)[1]
    assert row["false_alarms"] == [0, 2 * 2 * radiation.WIDTH_BATCH]
    assert row["flips"] == 40 and 0 < row["flips_consequential"] < 40
    assert row["flips_detected"] == row["flips_consequential"]


def test_a_negative_seed_or_count_is_a_usage_error_never_a_traceback(capsys):
    """numpy's generators refuse a negative seed: ``python -m bench.radiation --seed -1`` was a ValueError
    traceback from inside numpy (found in audit), and bench.abft_ort_gpu's ``--tiles -5`` dropped the last five
    tiles silently. argparse refuses them now, as any other bad argument, with exit status 2."""
    from bench import abft_gpu, abft_ort_gpu

    for main, argv in ((radiation.main, ["--seed", "-1"]), (abft_gpu.main, ["--seed", "-20"]),
                       (abft_ort_gpu.main, ["--tiles", "-5"]), (abft_ort_gpu.main, ["--flips", "x"])):
        with pytest.raises(SystemExit) as refused:
            main(argv)
        err = capsys.readouterr().err
        assert refused.value.code == 2 and "Traceback" not in err, (argv, err)
        assert "is negative: give 0 or more" in err or "is not a whole number" in err, (argv, err)
    assert radiation.non_negative_int("0") == 0 and radiation.non_negative_int("17") == 17


def test_the_flip_campaigns_clean_runs_are_counted_for_the_model_that_made_them():
    """``false_alarms_flip_campaign_clean`` is the protected model's (abft_ok); the campaign over every
    activation of the model with range checks too (abft_ok and range_ok) was summed into it, and left out of
    ``range_false_alarms_flip_campaign_clean`` (found in audit: 16 000 of its tiles at the default counts)."""
    from flight.compute import ranges
    from flight.compute.package import shipped_reference_inputs

    bare = (radiation.MODELS_DIR / radiation.MODEL_FILE).read_bytes()
    protected = abft.protect(onnx.load_from_string(bare))
    ranged = ranges.protect(protected, ranges.learn(bare, shipped_reference_inputs()), margin=ranges.DEFAULT_MARGIN)
    held = radiation.load_held_out().tiles.astype(np.float32)
    tallies = radiation.flip_campaigns(protected, held, 17, 2, 2, ranged)
    range_flips = tallies.pop("range_activations")
    batch = radiation.FLIP_BATCH
    # weights 1, activations 1, unchecked weights 2, unchecked activations 2, every activation 2, past the checks
    assert radiation.campaign_clean(tallies.values(), (abft.OUTPUT,))[1] == (1 + 1 + 2 + 2 + 2
                                                                            + radiation.PAST_FLIPS) * batch
    # the range model's: the unchecked activations replayed (2) and every activation replayed (2)
    assert radiation.campaign_clean([range_flips, *tallies.values()], (abft.OUTPUT, ranges.OUTPUT))[1] == 4 * batch


def test_the_store_writers_unsynced_records_run_from_the_last_sync_of_any_writer(monkeypatch):
    """bench.reliability's ``store_unsynced_records_p99``: the records appended since the last fsync when the
    kill came. Each writer's count began at id 0, so one killed before its first sync had every record the
    store ever took unsynced (84 992 in one kill of the default 100, the p99 1314 where the rest were under 470;
    found in audit). Two scripted writers (what they print is what the bench reads): the first appends 1-3 and
    syncs at 2, the second appends 4 and 5 and never syncs: 1, then 3 records unsynced (not 5)."""
    from bench import reliability

    monkeypatch.setattr(reliability, "_WRITER", "import sys\n"
                        "first = int(sys.argv[4]) % 1000 == 0\n"
                        "print('A 1\\nA 2\\nS 2 0.25\\nA 3' if first else 'A 4\\nA 5', flush=True)\n")
    figures = reliability.store_crashes(kills=2, seed=3)
    assert figures["store_unsynced_records_p99"] == pytest.approx(np.percentile([1, 3], 99))
    assert figures["store_sync_ms_p99"] == 0.25


def test_the_compute_benchs_pairs_put_each_side_first_as_often(monkeypatch):
    """bench.compute alternates which side of a pair goes first so that a slow spell of the machine lands on
    both alike; its pair counts must be even for that (its doc: 7 split the orders 4:3). ``SIZE_PAIRS`` was 5
    (found in audit: 3:2 for ``infer_ratio_by_job_tiles``)."""
    from bench import compute

    orders: list[bool] = []
    monkeypatch.setattr(compute, "pair", lambda bare, agent, tiles, bare_first: orders.append(bare_first) or (1.0, 2.0))
    for n in (compute.PAIRS, compute.SIZE_PAIRS, compute.CHECKED_PAIRS):
        orders.clear()
        _, _, ratios = compute._pairs(None, None, np.zeros((4, 1)), n)
        assert len(ratios) == n and orders.count(True) == orders.count(False), (n, orders)
