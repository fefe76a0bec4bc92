"""Upsets the HIL harness puts into the worker's memory (flight/compute/inject.py): each lands
where a proton would, and the ledger follows it to what detected it and what the product said."""

from __future__ import annotations

import time

import numpy as np
import pytest

from flight.compute import protocol as cp
from flight.compute.inject import LEDGER, REQUEST_DIR, activation_tensors, with_hooks
from flight.compute.store import Provenance
from flight.compute.usecase.shipped import MODEL_FILE, MODEL_NAME, MODELS_DIR, load_held_out
from flight.link.definitions import DICTIONARY, Admission, FluxClass
from flight.storage import read_checked_json, write_checked_json
from tests.model_helpers import WorkerBench, protect_as_version_6

QUIET = cp.Radiation(FluxClass.QUIET, False, 10.0, 5700.0, None)


@pytest.fixture
def bench(tmp_path):
    b = WorkerBench(tmp_path / "compute", allow_unsigned=True, upset_injection=True)
    b.worker.install_shipped_models()
    defaults = DICTIONARY.parameter_defaults
    b.worker._handle(cp.Admit(Admission.ALL, 1, 16, 1.0, None, "test", radiation=QUIET,
                              double_run_fraction=0.0, double_run_all_in_saa=defaults["double_run_all_in_saa"],
                              scrub_weights=True, abft_checks=True))
    b.data_set("held", load_held_out().tiles[:32])
    yield b
    b.close()


def request(bench, name: str, **body) -> None:
    write_checked_json(bench.root / REQUEST_DIR / f"{name}.json", {"seed": 7, **body})


def ledger(bench) -> dict:
    return read_checked_json(bench.root / REQUEST_DIR / LEDGER)


def struck(bench, name: str, **body):
    """One upset asked for and struck into the open session (a scrub tick takes it in; the scrub itself
    is not due yet): (the session, its scrubber, the upset as the ledger lists it, live)."""
    session = bench.worker._session(MODEL_NAME)
    request(bench, name, **body)
    bench.worker.scrub_tick(0.0)
    [upset] = ledger(bench)["upsets"]
    assert upset["state"] == "live"
    return session, session.scrubber, upset


def site_of(upset: dict) -> tuple[str, int]:
    """(tensor, byte) of a weight or golden-copy upset's site ("[golden copy k: ]tensor[byte n] bit b")."""
    where = upset["site"].split(": ")[-1]
    return where.split("[byte ")[0], int(where.split("[byte ")[1].split("]")[0])


def still_clock(monkeypatch) -> None:
    """The worker's monotonic clock stands still: no periodic scrub comes due, and a failed check's full
    scrub is skipped after the first (one ran less than RESCRUB_MIN_S before), whatever the machine's speed."""
    from flight.compute import worker as worker_module

    real, now_s = worker_module.time, worker_module.time.monotonic()
    monkeypatch.setattr(worker_module, "time", type("StillTime", (), {
        "monotonic": staticmethod(lambda: now_s), "__getattr__": lambda _self, name: getattr(real, name)})())


def run_job(bench, job_id: int):
    job = bench.infer(job_id, "held", model=MODEL_NAME)
    assert job.state.value == "DONE", job.detail
    with np.load(bench.root / "products" / f"job{job_id:05d}-held.npz", allow_pickle=False) as npz:
        return npz["check"]


@pytest.mark.req("RAD-111")
def test_a_weight_upset_lands_in_the_owned_buffers_and_the_scrub_puts_it_right(bench):
    session, scrubber, upset = struck(bench, "u1", target="weights", bit=6)
    assert upset["site"].endswith("bit 6")
    tensor, byte = site_of(upset)
    assert scrubber.owned_bytes(tensor)[byte] != scrubber.golden_bytes(0, tensor)[byte]
    bench.worker._scrub_now(session)  # a full pass, as after a failed check
    [upset] = ledger(bench)["upsets"]
    assert upset["state"] == "ended" and upset["corrected"] and upset["detected_by"] == "scrub"
    assert scrubber.owned_bytes(tensor)[byte] == scrubber.golden_bytes(0, tensor)[byte]


@pytest.mark.req("RAD-111", "RAD-102")
def test_a_golden_copy_upset_changes_no_result_and_the_scrubs_vote_puts_it_right(bench):
    """A proton lands in the golden copies three times as often as in the owned weights: no result
    reads them, no batch is judged for one, and the scrub's vote of the three puts it right."""
    session, scrubber, upset = struck(bench, "g1", target="golden", bit=6)
    assert upset["site"].startswith("golden copy ") and upset["site"].endswith("bit 6")
    copy = int(upset["site"].split("golden copy ")[1].split(":")[0])
    tensor, byte = site_of(upset)
    assert scrubber.golden_bytes(copy, tensor)[byte] != scrubber.owned_bytes(tensor)[byte]
    assert not bench.worker._injector.live()  # noqa: SLF001 - nothing for a batch's judge to see
    assert (run_job(bench, 1) == 1).all()
    [upset] = ledger(bench)["upsets"]
    assert upset["batches"] == 0 and upset["corrupt_tiles"] == 0 and upset["state"] in ("live", "ended")
    bench.worker._scrub_now(session)  # a full pass: every golden copy, voted
    [upset] = ledger(bench)["upsets"]
    assert upset["state"] == "ended" and upset["corrected"] and upset["detected_by"] == "scrub"
    assert scrubber.golden_bytes(copy, tensor)[byte] == scrubber.owned_bytes(tensor)[byte]
    golden = ledger(bench)["totals"]["golden"]
    assert (golden["requested"], golden["applied"], golden["corrected"], golden["harmful"]) == (1, 1, 1, 0)


@pytest.mark.req("RAD-111", "RAD-102")
def test_the_periodic_scrub_finds_a_golden_copy_upset_within_three_passes(bench):
    """One golden copy a periodic pass: a flip in any of them is voted right by the third pass at the latest."""
    _session, scrubber, _upset = struck(bench, "g2", target="golden", seed=11)
    period = scrubber.period_s
    for k in range(1, 4 * 40 + 1):  # up to four periods, in steps of a fortieth of one
        bench.worker.scrub_tick(k * period / 40)
        if ledger(bench)["upsets"][0]["state"] == "ended":
            break
    [upset] = ledger(bench)["upsets"]
    assert upset["state"] == "ended" and upset["detected_by"] == "scrub" and scrubber.verify()
    assert k * period / 40 <= 3 * period + period / 40


@pytest.mark.req("RAD-111")
def test_a_golden_copy_upset_and_a_weight_upset_on_the_same_bit_end_only_when_both_are_put_right(bench):
    """Found in review: each was judged put right by comparing its byte with the other's copy, so two
    upsets on the same bit of one byte (the owned weights, golden copy 0) ended each other unrepaired."""
    session = bench.worker._session(MODEL_NAME)
    request(bench, "u1", target="weights", tensor="w1", byte=5, bit=3)
    request(bench, "u2", target="golden", tensor="w1", byte=5, bit=3, seed=3)  # seed 3: golden copy 0
    bench.worker.scrub_tick(0.0)
    upsets = {u["id"]: u for u in ledger(bench)["upsets"]}
    assert upsets["u2"]["site"].startswith("golden copy 0: w1[byte 5] bit 3"), upsets["u2"]["site"]
    assert {u["state"] for u in upsets.values()} == {"live"} and not session.scrubber.verify()
    bench.worker._scrub_now(session)
    upsets = {u["id"]: u for u in ledger(bench)["upsets"]}
    assert all(u["state"] == "ended" and u["detected_by"] == "scrub" for u in upsets.values())
    assert session.scrubber.verify()


@pytest.mark.req("RAD-111")
def test_an_activation_flip_in_a_checked_tensor_is_caught_and_the_product_is_right(bench):
    request(bench, "u1", target="activations", tensor="a1", bit=30)
    status = run_job(bench, 1)
    [upset] = ledger(bench)["upsets"]
    assert upset["state"] == "ended" and upset["site"].startswith("a1[") and upset["batches"] == 1
    assert upset["detected_by"] == "checksum" and upset["corrected"]  # rerun after a scrub: clean
    assert upset["corrupt_passed"] == 0 and (status == 1).all()
    assert bench.worker.checks_failed == 1 and bench.worker.reruns == 1


@pytest.mark.req("RAD-003", "RAD-111")
def test_a_flip_in_the_models_output_is_caught_by_its_compare_with_the_copy(bench):
    """The Softmax's probabilities, made after the last checked node, are compared with their copy
    (pass version 7): a flip there fails the flags, and the batch is made again."""
    request(bench, "u1", target="activations", tensor="probabilities", bit=30)
    status = run_job(bench, 1)
    [upset] = ledger(bench)["upsets"]
    assert upset["site"].startswith("probabilities[") and upset["detected_by"] == "checksum"
    assert upset["corrected"] and upset["corrupt_passed"] == 0 and (status == 1).all()


@pytest.mark.req("RAD-111")
def test_an_upset_the_checks_cannot_see_is_counted_as_reported_good_while_corrupt(bench, monkeypatch):
    """A flip in the model's output ``probabilities`` (the Softmax after the last checked node), with the
    model protected as version 6 did (no compare of the outputs: no check reads it), passes every check:
    the ledger must say so, not claim a detection. (A flip in the head's input ``z`` was such a one until
    each check predicted from its input recomputed.)"""
    protect_as_version_6(monkeypatch)
    request(bench, "u1", target="activations", tensor="probabilities", bit=30)
    status = run_job(bench, 1)
    [upset] = ledger(bench)["upsets"]
    assert upset["site"].startswith("probabilities[") and upset["detected_by"] == ""
    assert upset["corrupt_tiles"] >= 1 and upset["corrupt_passed"] == upset["corrupt_tiles"]
    assert not upset["corrected"] and (status == 1).all()
    totals = ledger(bench)["totals"]["activations"]
    assert totals["corrupt_reported_good"] == upset["corrupt_passed"] and totals["detected"] == 0


@pytest.mark.req("RAD-111")
def test_requests_that_make_no_sense_are_counted_and_lose_nothing_else(bench):
    request(bench, "bad1", target="cache")
    request(bench, "bad2", target="weights", bit=9)
    (bench.root / REQUEST_DIR / "bad3.json").write_text("{not json")
    request(bench, "good", target="outputs", bit=30)
    status = run_job(bench, 1)
    body = ledger(bench)
    assert body["bad_requests"] == 3 and [u["id"] for u in body["upsets"]] == ["good"]
    assert not list((bench.root / REQUEST_DIR).glob("bad*.json"))  # each request read once
    assert len(status) == 32


def test_the_hooks_pass_every_tensor_through_unchanged_when_off(bench):
    import onnx

    from flight.compute.providers import open_session

    session = bench.worker._session(MODEL_NAME)
    model = onnx.load_from_string(session.data)
    tensors = activation_tensors(model)
    assert {"a1", "a2", "logits", "xn"} <= set(tensors) and not any(t.startswith("abft/") for t in tensors)
    hooked = open_session(with_hooks(model, tensors).SerializeToString(), threads=1).session
    tiles = load_held_out().tiles[:4].astype(np.float32)
    feed = {session.input_name: tiles, **{t + "/mask": np.zeros(1, bool) for t in tensors},
            **{t + "/value": np.zeros(1, np.float32) for t in tensors}}
    plain = open_session(session.data, threads=1).session.run(["probabilities"], {session.input_name: tiles})[0]
    assert np.array_equal(hooked.run(["probabilities"], feed)[0], plain)


@pytest.mark.req("RAD-111")
def test_an_upset_in_a_held_result_is_caught_by_its_crc_and_the_batch_made_again(bench):
    request(bench, "u1", target="outputs", bit=30)
    status = run_job(bench, 1)
    [upset] = ledger(bench)["upsets"]
    assert upset["site"].startswith("probabilities[") and upset["detected_by"] == "output CRC"
    assert upset["corrected"] and upset["corrupt_tiles"] == 0 and (status == 1).all()
    with np.load(bench.root / "products" / "job00001-held.npz", allow_pickle=False) as npz:
        confidence = npz["confidence"]
        receipt = __import__("json").loads(str(npz["receipt"]))
    assert np.isfinite(confidence).all() and (confidence <= 1.0).all()  # the product holds the new run's result
    # The receipt says the tiles were made again, and their status is the new run's checks'.
    assert (receipt["results_changed"], receipt["reruns"], receipt["check_status"]) == (1, 1, "passed")
    assert bench.worker.checks_failed == 1 and bench.worker.reruns == 1


@pytest.mark.req("RAD-111")
def test_upsets_that_wait_together_strike_the_next_batch_together_and_its_tiles_count_once(bench):
    request(bench, "o1", target="outputs", bit=30)
    request(bench, "o2", target="outputs", bit=29)
    request(bench, "a1", target="activations", tensor="a1", bit=30)
    request(bench, "a2", target="activations", tensor="a2", bit=30)
    run_job(bench, 1)
    body = ledger(bench)
    upsets = {u["id"]: u for u in body["upsets"]}
    assert all(u["state"] == "ended" and u["batches"] == 1 for u in upsets.values())  # all in the first batch
    assert upsets["o1"]["detected_by"] == upsets["o2"]["detected_by"] == "output CRC"
    assert upsets["a1"]["detected_by"] == upsets["a2"]["detected_by"] == "checksum"
    assert body["batches"]["judged"] == 1 and body["batches"]["corrupt_reported_good"] == 0


@pytest.mark.req("RAD-111")
def test_a_batch_is_judged_once_on_what_went_into_the_product(bench):
    """An unseen flip in ``z`` and a flip in the held result, in one batch: the CRC makes the batch
    again, clean, so nothing corrupt went into the product and nothing is charged for it."""
    request(bench, "a", target="activations", tensor="z", bit=30)
    request(bench, "o", target="outputs", bit=30)
    status = run_job(bench, 1)
    body = ledger(bench)
    assert body["batches"] == {"judged": 1, "corrupt_tiles": 0, "corrupt_reported_good": 0, "corrupt_unchecked": 0,
                               "corrupt_marked_failed": 0}
    assert all(u["corrected"] and u["corrupt_tiles"] == 0 for u in body["upsets"]) and (status == 1).all()


@pytest.mark.req("RAD-111")
def test_a_weight_upset_the_checksum_finds_is_credited_to_the_checksum_not_the_scrub_after_it(bench):
    """Bit 6 of the top byte of w1's first float is an exponent bit: the output moves, the checksum
    fails, the worker scrubs (which repairs it) and runs again. The checksum found it."""
    request(bench, "w", target="weights", tensor="w1", byte=3, bit=6)
    status = run_job(bench, 1)
    [upset] = ledger(bench)["upsets"]
    assert upset["site"] == "w1[byte 3] bit 6" and upset["state"] == "ended" and upset["corrected"]
    assert upset["detected_by"] == "checksum" and upset["batches"] >= 1 and upset["corrupt_passed"] == 0
    assert bench.worker.checks_failed >= 1 and (status == 1).all()



@pytest.mark.req("RAD-111")
def test_a_weight_upset_whose_session_closes_for_another_reason_is_not_counted_as_found(bench):
    """The power mode changes the worker's threads: the session is opened again and the upset goes
    with the old one. Put right, but nothing found it: the ledger must not count it detected."""
    bench.worker._session(MODEL_NAME)
    request(bench, "u1", target="weights", bit=6)
    bench.worker.scrub_tick(0.0)  # struck; the scrub is not due
    assert ledger(bench)["upsets"][0]["state"] == "live"
    bench.worker._handle(cp.Admit(Admission.ALL, 2, 16, 1.0, None, "test", radiation=QUIET, double_run_fraction=0.0,
                                  double_run_all_in_saa=False, scrub_weights=True, abft_checks=True))
    bench.worker._session(MODEL_NAME)  # two threads now: another session
    bench.worker.scrub_tick(0.0)
    body = ledger(bench)
    [upset] = body["upsets"]
    assert upset["state"] == "ended" and upset["corrected"] and upset["detected_by"] == ""
    assert "closed" in upset["note"] and body["totals"]["weights"]["detected"] == 0
    # One the worker rebuilt its session for (weights it could not repair) is found by that reload.
    session = bench.worker._session(MODEL_NAME)
    request(bench, "u2", target="weights", bit=6)
    bench.worker.scrub_tick(0.0)
    bench.worker._injector.rebuilt([session])
    bench.worker._sessions.clear()
    bench.worker.scrub_tick(0.0)
    assert [u["detected_by"] for u in ledger(bench)["upsets"]] == ["", "reload"]


@pytest.mark.req("RAD-111")
def test_unrepairable_weights_credit_the_upset_to_the_reload_the_worker_made(bench):
    """The worker's own fault path (weights no majority settles: the session dropped, built anew from
    the store) tells the injector, which credits the upset to that reload."""
    session, scrubber, upset = struck(bench, "u1", target="weights", bit=6)
    tensor, byte = site_of(upset)
    for copy, bit in ((0, 0), (1, 0), (2, 1)):  # no majority of the golden copies settles it
        scrubber.golden_bytes(copy, tensor)[byte] ^= 1 << bit
    bench.worker._scrub_now(session)
    assert bench.worker._sessions == {}  # dropped: the WeightsUnrepairable path ran
    [upset] = ledger(bench)["upsets"]
    assert upset["state"] == "ended" and upset["detected_by"] == "reload"


@pytest.mark.req("RAD-111", "HIL-022")
def test_a_weight_upset_a_failed_check_did_not_put_right_is_not_counted_found(bench, monkeypatch):
    """Found in audit: a weight upset took its batch's failed check as its finder whatever failed it, here
    another upset's, its scrub skipped as one had run just before: the ledger said found while the flip
    stayed in memory. It is found by what puts it right, here the periodic scrub."""
    still_clock(monkeypatch)  # every full scrub after the first ran "just before"; no periodic one comes due
    request(bench, "a1", target="activations", tensor="a1", bit=30)
    run_job(bench, 1)  # the checksum fails: the one full scrub
    request(bench, "w1", target="weights", tensor="w1", byte=0, bit=0)  # a low mantissa bit: no check sees it
    request(bench, "a2", target="activations", tensor="a1", bit=30)
    run_job(bench, 2)  # the checksum fails again, on a2; no scrub
    upsets = {u["id"]: u for u in ledger(bench)["upsets"]}
    assert upsets["a2"]["detected_by"] == "checksum" and upsets["w1"]["batches"] >= 1
    assert (upsets["w1"]["state"], upsets["w1"]["detected_by"], upsets["w1"]["corrected"]) == ("live", "", False)
    assert ledger(bench)["totals"]["weights"]["detected"] == 0
    scrubber = bench.worker._session(MODEL_NAME).scrubber
    bench.worker.scrub_tick(scrubber._last_step_s + 2 * scrubber.period_s)  # noqa: SLF001 - a full pass owed
    upsets = {u["id"]: u for u in ledger(bench)["upsets"]}
    assert (upsets["w1"]["state"], upsets["w1"]["detected_by"]) == ("ended", "scrub") and scrubber.verify()


@pytest.mark.req("RAD-111", "HIL-022")
def test_weight_upsets_land_in_every_open_model_and_a_batch_is_judged_only_on_its_own(bench, monkeypatch):
    """Found in audit: with two models open every weight upset went into the first opened, and a batch of
    the other was judged against them (and credited with finding them) though it never read them."""
    still_clock(monkeypatch)  # no periodic scrub comes due to end them
    bench.worker.store.install("other", "1", (MODELS_DIR / MODEL_FILE).read_bytes(), golden=True,
                               provenance=Provenance("test", False, "", time.time()))  # the same bytes: as big
    first = bench.worker._session(MODEL_NAME)
    running = bench.worker._session("other")
    for k in range(16):
        request(bench, f"w{k:02d}", target="weights", seed=k)
    bench.worker.scrub_tick()  # struck
    where = {u.id: u._where[0] for u in bench.worker._injector.upsets}  # noqa: SLF001
    in_first = sorted(k for k, s in where.items() if s is first)
    assert 4 <= len(in_first) <= 12 and all(s is first or s is running for s in where.values())  # as their bytes: alike
    assert bench.infer(1, "held", model="other").state.value == "DONE"
    upsets = {u["id"]: u for u in ledger(bench)["upsets"]}
    for k, u in upsets.items():
        if k in in_first:  # in memory no batch read
            assert (u["state"], u["batches"], u["detected_by"], u["shared_batches"]) == ("live", 0, "", 0), u
        else:
            assert u["batches"] >= 1, u


@pytest.mark.req("RAD-111")
def test_a_weight_upset_lands_in_a_model_as_often_as_its_bytes_are_hit(tmp_path):
    """A proton hits a byte: of two models, the one with three times the owned bytes takes three upsets in
    four; a named tensor lands where it is; one model draws as it always did, so a seed strikes the same byte."""
    from types import SimpleNamespace

    from flight.compute.inject import Upset, UpsetInjector, draw_byte, owned_sites
    from flight.compute.scrub import WeightScrubber

    def strike(*sizes, **request):
        sessions = [SimpleNamespace(scrubber=WeightScrubber({f"t{n}": np.zeros(n, np.uint8)}, 0.0)) for n in sizes]
        injector = UpsetInjector(tmp_path / str(sizes), lambda d: None, lambda d, s: None)
        injector.upsets = [Upset(f"u{k}", "weights" if k % 2 else "golden", k, **request) for k in range(400)]
        injector.strike_weights(*sessions)
        # live, or, two on the same bit of one byte, undone by each other (inject.py: nothing left to find)
        undone = [u for u in injector.upsets if u.state == "ended" and u.note.startswith("undone by another upset")]
        assert all(u.state == "live" for u in injector.upsets if u not in undone), injector.errors
        assert len(undone) % 2 == 0 and len(undone) < 40
        return sessions, [u for u in injector.upsets if u.state == "live"], injector.upsets

    (small, large), upsets, everyone = strike(1000, 3000)
    assert 0.68 < sum(u._where[0] is large for u in upsets) / len(upsets) < 0.82  # noqa: SLF001
    assert [u.site for u in strike(1000, 3000)[2]] == [u.site for u in everyone]  # seeded: the same again
    (small, large), upsets, _ = strike(1000, 3000, want_tensor="t1000")
    assert all(u._where[0] is small for u in upsets)  # noqa: SLF001
    (one,), upsets, _ = strike(1000)
    expected = [draw_byte(np.random.default_rng(u.seed), *owned_sites(one.scrubber)) for u in upsets]
    assert [(u._where[2], u._where[3]) for u in upsets] == [(t, b) for t, b, _bit in expected]  # noqa: SLF001


@pytest.mark.req("RAD-111")
def test_an_activation_upset_naming_no_such_tensor_is_not_carried_out_elsewhere(bench):
    request(bench, "a", target="activations", tensor="no_such_tensor", bit=30)
    status = run_job(bench, 1)
    [upset] = ledger(bench)["upsets"]
    assert upset["state"] == "not_applied" and "no_such_tensor" in upset["note"] and upset["site"] == ""
    assert (status == 1).all()  # nothing struck: every tile passed


@pytest.mark.req("RAD-111")
def test_a_request_that_cannot_be_carried_out_costs_the_ledger_a_line_not_the_job(bench, monkeypatch):
    request(bench, "bad-seed", target="outputs", seed=-1)
    request(bench, "a", target="activations", tensor="a1", bit=30)
    injector = bench.worker._injector
    monkeypatch.setattr(injector, "_hooked_session", lambda session: (_ for _ in ()).throw(RuntimeError("no graph")))
    status = run_job(bench, 1)
    body = ledger(bench)
    assert body["bad_requests"] == 1 and len(status) == 32
    [upset] = body["upsets"]
    assert upset["state"] == "not_applied" and "no graph" in upset["note"] and body["errors"]
    assert run_job(bench, 2) is not None  # the next job runs too


@pytest.mark.req("RAD-111")
def test_a_board_refuses_upset_injection_only_the_sim_backend_takes_it():
    from flight.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="compute.upset_injection"):
        parse_config({"hal": {"backend": "jetson"}, "compute": {"upset_injection": True}})
    with pytest.raises(ConfigError, match="compute.upset_injection"):
        parse_config({"compute": {"upset_injection": True}}, overrides={"hal.backend": "linux"})
    assert parse_config({"hal": {"backend": "sim"}, "compute": {"upset_injection": True}}).compute_upset_injection
    assert not parse_config({"hal": {"backend": "jetson"}}).compute_upset_injection


@pytest.mark.req("RAD-111")
def test_the_output_crc_is_not_credited_with_an_upset_it_did_not_find(bench):
    """A harmless activation flip (a low mantissa bit of a1) shares a batch with a held-result
    flip: the CRC makes the batch again, but it found the output upset, not the activation one."""
    request(bench, "a", target="activations", tensor="a1", bit=0)
    request(bench, "o", target="outputs", bit=30)
    run_job(bench, 1)
    upsets = {u["id"]: u for u in ledger(bench)["upsets"]}
    assert upsets["o"]["detected_by"] == "output CRC"
    assert upsets["a"]["detected_by"] in ("", "checksum") and upsets["a"]["detected_by"] != "output CRC"
    assert upsets["a"]["corrected"] and upsets["a"]["corrupt_tiles"] == 0


@pytest.mark.req("RAD-111", "RAD-112")
def test_with_range_checks_the_same_flip_in_the_output_is_caught_by_them_and_put_right(bench, monkeypatch):
    """An upset a version 6 checksum pass cannot see (above), with ``range_checks`` on: the hooked run's
    range flag fails, the batch is scrubbed and run again, and the ledger names the range checks. (A flip
    that stays within the learned range, a zero made 2.0, still passes: bench.radiation's
    range_detect_rate_activations counts those.)"""
    protect_as_version_6(monkeypatch)
    defaults = DICTIONARY.parameter_defaults
    bench.worker._handle(cp.Admit(Admission.ALL, 1, 16, 1.0, None, "test", radiation=QUIET,
                                  double_run_fraction=0.0, double_run_all_in_saa=defaults["double_run_all_in_saa"],
                                  scrub_weights=True, abft_checks=True, range_checks=True))
    request(bench, "u1", target="activations", tensor="probabilities", bit=30, seed=1)  # it leaves the range
    status = run_job(bench, 1)
    [upset] = ledger(bench)["upsets"]
    assert upset["site"].startswith("probabilities[") and float(upset["site"].split("-> ")[1]) > 1e30  # far out
    assert upset["detected_by"] == "range" and upset["corrected"]
    assert upset["corrupt_passed"] == 0 and (status == 1).all()
    totals = ledger(bench)["totals"]["activations"]
    assert totals["corrupt_reported_good"] == 0 and totals["detected"] == 1


@pytest.mark.req("RAD-111", "HIL-022")
def test_a_request_taken_in_by_a_worker_killed_before_its_ledger_was_written_is_not_lost(bench):
    """The request file goes once the ledger that lists it is on disk: a worker killed in between
    leaves it for the next, which takes it in once."""
    bench.worker._session(MODEL_NAME)
    request(bench, "u1", target="outputs", bit=30)
    bench.worker._injector.poll()  # taken in ...
    assert [u.id for u in bench.worker._injector.upsets] == ["u1"]
    assert (bench.root / REQUEST_DIR / "u1.json").exists()  # ... and still on disk: no ledger lists it yet
    bench.restart()  # killed before any save
    bench.worker._handle(cp.Admit(Admission.ALL, 1, 16, 1.0, None, "test", radiation=QUIET,
                                  double_run_fraction=0.0, double_run_all_in_saa=False, scrub_weights=True,
                                  abft_checks=True))
    run_job(bench, 2)
    body = ledger(bench)
    assert [u["id"] for u in body["upsets"]] == ["u1"] and body["totals"]["outputs"]["requested"] == 1
    assert not (bench.root / REQUEST_DIR / "u1.json").exists()


@pytest.mark.req("RAD-111")
def test_each_upset_is_charged_with_the_tiles_it_can_reach_and_says_when_it_shared_them(tmp_path):
    """Found in review: every upset of a batch took the batch's outcome, so a harmless flip beside a
    harmful one was counted harmful and "detected by checksum". Now an activation is charged with its
    own sample and an output with its row (a weight, with every tile), detection follows its own
    tile's flag, and an upset whose tiles another in the batch could reach says so (``shared``)."""
    from types import SimpleNamespace

    from onnx import TensorProto, helper

    from flight.compute.checks import FAILED, PASSED
    from flight.compute.inject import Batch, Upset, UpsetInjector
    from flight.compute.providers import open_session

    # The reference run is a real session; this model's result is its input, so the clean result is known.
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["probabilities"])], "id",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    injector = UpsetInjector(tmp_path, lambda d: open_session(d, threads=1).session, lambda d, s: None)
    session = SimpleNamespace(outputs=["probabilities"], input_name="x", sha256="s", protection="abft",
                              abft_precision="fp32", data=data)
    clean = np.tile(np.array([[0.9, 0.1]], np.float32), (4, 1))

    def judge(upsets, first_ok):
        injector.upsets = upsets
        probs = clean.copy()
        probs[0] = [0.2, 0.8]  # tile 0 went into the product corrupt, marked failed
        injector.release(Batch(list(upsets), failed_check="checksum", first_ok=np.array(first_ok)), session, clean,
                         probs, np.array([FAILED, PASSED, PASSED, PASSED], np.int8), False)
        return {u.id: u for u in upsets}

    def activation(name, row):
        u = Upset(name, "activations", 1, state="live")
        u._rows = (row,)  # noqa: SLF001 - as _hooked_run sets it from the element it struck
        return u

    u = judge([activation("a0", 0), activation("a2", 2)], [False, True, True, True])
    assert (u["a0"].detected_by, u["a0"].corrupt_tiles, u["a0"].corrupt_failed, u["a0"].corrected) == ("checksum", 1, 1, False)
    assert (u["a2"].detected_by, u["a2"].corrupt_tiles, u["a2"].corrected) == ("", 0, True)  # harmless, unseen
    assert u["a0"].shared_batches == u["a2"].shared_batches == 0
    w = Upset("w", "weights", 2, state="live")
    u = judge([activation("b0", 0), activation("b3", 3), w], [False, True, True, True])
    assert all(x.shared_batches == 1 for x in u.values())  # a weight reaches every tile: its counts are shared
    assert (u["w"].corrupt_tiles, u["b0"].corrupt_tiles, u["b3"].corrupt_tiles) == (1, 1, 0)
    assert injector.totals()["activations"]["shared"] == 2 and injector.batches["corrupt_tiles"] == 2  # each tile once


@pytest.mark.req("RAD-111")
def test_a_struck_activation_and_output_are_charged_to_their_own_tile_in_the_worker(bench):
    """The worker's own code sets where an upset can reach: the sample of the element struck in a
    batch-first tensor, the row of the probability struck, and the batch's first-run flags."""
    request(bench, "a", target="activations", tensor="a1", bit=30)
    request(bench, "o", target="outputs", bit=30)
    run_job(bench, 1)
    struck = {u.id: u for u in bench.worker._injector.upsets}  # noqa: SLF001
    for u in struck.values():
        assert u._rows is not None and len(u._rows) == 1 and 0 <= u._rows[0] < 16, u  # noqa: SLF001
    assert struck["a"].detected_by == "checksum" and struck["a"].corrupt_tiles <= 1
    assert struck["a"].shared_batches == (struck["a"]._rows == struck["o"]._rows)  # noqa: SLF001


@pytest.mark.req("RAD-111")
def test_only_tensors_carrying_the_symbolic_batch_axis_are_taken_as_per_sample():
    """Found in review: a tensor made from weights alone whose first size equals the batch's by
    coincidence was taken as per-sample. Only the input's symbolic batch axis carried through counts."""
    from onnx import TensorProto, helper, numpy_helper

    from flight.compute.inject import batch_first_tensors

    w = np.ones((4, 3), np.float32)
    nodes = [helper.make_node("Mul", ["w", "two"], ["w2"]), helper.make_node("MatMul", ["x", "w2"], ["y"]),
             helper.make_node("Relu", ["y"], ["probabilities"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32(2.0), "two")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert batch_first_tensors(model) == {"y", "probabilities"}  # not w2 [4, 3], whatever the batch
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4  # a fixed batch of 4: nothing can be told
    assert batch_first_tensors(model) == frozenset()


@pytest.mark.req("RAD-111")
def test_the_hooks_of_a_model_whose_names_end_as_theirs_strike_the_tensor_named_and_no_other():
    """Found in audit: with tensors ``h`` and ``h/raw``, ``h``'s maker was renamed ``h/raw`` beside the real
    one (a graph onnxruntime refused: no activation upset of such a model was ever struck). The raw tensor
    takes a name of its own; an input the hooks add that the model has already is refused by name."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from flight.compute.inject import flip_bit

    def model(inner: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], [inner], name="h/hook"), helper.make_node("Relu", [inner], ["h"]),
             helper.make_node("Sigmoid", ["h"], ["probabilities"])], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
            [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
            [numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 12, "w")])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)

    m = model("h/raw")
    tensors = activation_tensors(m)
    assert set(tensors) == {"h/raw", "h", "probabilities"}
    hooked = ort.InferenceSession(with_hooks(m, tensors).SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.ones((2, 4), np.float32)
    off = {**{t + "/mask": np.zeros(1, bool) for t in tensors},
           **{t + "/value": np.zeros(1, np.float32) for t in tensors}}
    names = ["h/raw", "h", "probabilities"]
    clean = dict(zip(names, hooked.run(names, {"x": x, **off})))
    plain = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(clean["probabilities"], plain.run(["probabilities"], {"x": x})[0])
    mask = np.zeros((2, 3), bool)
    mask[1, 2] = True
    new = flip_bit(clean["h/raw"][1, 2], 31)  # negative: the Relu after it makes it 0
    got = dict(zip(names, hooked.run(names, {"x": x, **off, "h/raw/mask": mask, "h/raw/value": np.array([new])})))
    assert got["h/raw"][1, 2] == new  # the element asked for, and no other
    assert np.array_equal(np.delete(got["h/raw"].ravel(), 5), np.delete(clean["h/raw"].ravel(), 5))
    assert got["h"][1, 2] == 0.0 and got["h"][0].tolist() == clean["h"][0].tolist()
    with pytest.raises(ValueError, match="'h/mask'"):
        with_hooks(model("h/mask"), ("h",))


@pytest.mark.req("RAD-111")
def test_an_output_upset_naming_a_tensor_is_refused_not_struck_into_the_probabilities(bench):
    """Found in audit: an output upset naming ``logits`` was struck into the probabilities the worker held,
    and the ledger charged a tensor the request never named. It is a bad request, counted; the others go on."""
    request(bench, "named", target="outputs", tensor="logits", bit=30)
    request(bench, "good", target="outputs", bit=30)
    status = run_job(bench, 1)
    body = ledger(bench)
    assert body["bad_requests"] == 1 and [u["id"] for u in body["upsets"]] == ["good"]
    assert body["upsets"][0]["site"].startswith("probabilities[") and len(status) == 32
