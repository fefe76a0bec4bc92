"""The compute worker's install as an audit left it: the steps after the reference runs (the reference set deflated
again for the store, the store's activation) answered no ping, so a short compute_watchdog_s restarted a healthy
worker mid-install; a malformed signed delta failed the install with an IndexError naming nothing."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from flight.compute import package
from flight.compute import protocol as cp
from flight.compute.package import Delta, PackageError, ReferenceSet, StagedFiles, npz_bytes, sha256_hex
from flight.compute.uplink import UplinkChecks
from ground.model_package import pack_full
from tests.model_helpers import ALICE, ALICE_KEY, REF_X, WorkerBench, resign, tiny, trusted_file
from tests.test_worker_hardening import admit

PONG_WAIT_S = 30.0  # a bound on a wait for the worker's answer, never an assertion of how long anything took


def _first(bench: WorkerBench, kind: type, wait_s: float) -> object | None:
    """The first message of ``kind`` from the worker within ``wait_s`` (a bound, never a measure), others passed
    over (its events)."""
    deadline = time.monotonic() + wait_s
    while bench.router.poll(max(0, int((deadline - time.monotonic()) * 1000))):
        msg = cp.decode(bench.router.recv_multipart()[1])
        if isinstance(msg, kind):
            return msg
    return None


@pytest.fixture
def bench(tmp_path):
    b = WorkerBench(tmp_path / "compute", trusted_file(tmp_path, (ALICE, ALICE_KEY)))
    admit(b)
    yield b
    b.close()


@pytest.mark.req("CMP-012")
def test_a_large_reference_sets_bytes_call_the_keepalive_between_parts_and_are_those_of_one_write():
    """Found in audit: a reference set near its limit is seconds of deflate (9.4 s for 216 MiB here), one call
    answering no ping. Compressed in parts with the keep-alive after each; the bytes are the same as before
    (one compressor over the parts), so the same arrays still give the same bytes, and they read back."""
    rng = np.random.default_rng(5)
    x = rng.uniform(0.1, 1.0, size=(400_000, 2)).astype(np.float32)  # 3.2 MB: several parts of NPZ_PART_BYTES
    ref = ReferenceSet(x, {"probabilities": np.abs(x) * 2})
    calls = []
    data = ref.to_bytes(lambda: calls.append(1))
    raw_bytes = x.nbytes * 2
    assert len(calls) >= raw_bytes // package.NPZ_PART_BYTES
    assert data == ref.to_bytes()  # the keep-alive changes nothing in the bytes
    back = ReferenceSet.from_bytes(data)
    assert np.array_equal(back.x, x) and np.array_equal(back.outputs["probabilities"], np.abs(x) * 2)
    # and the bytes are those zipfile's single write makes (what the ground signed before this change)
    assert npz_bytes({"x": x}) == _one_write({"x": x})


def _one_write(arrays):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, arrays[key], allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


@pytest.mark.req("CMP-012", "MDL-004")
def test_an_install_answers_a_ping_while_it_deflates_the_reference_set_for_the_store(bench, monkeypatch):
    """Found in audit: after the reference runs, MODEL_INSTALL deflated the reference set again for the store in
    one call answering no ping (a set of 2 million rows: 1.2 s here, seconds more on a Jetson; 9.4 s at 216 MiB).
    A ping that comes as that begins is answered within it, before the install's reply."""
    manifest = pack_full(tiny(1.0), "tiny", "1", ALICE, ALICE_KEY, bench.staging, REF_X, 1e-5).manifest
    deflate = ReferenceSet.to_bytes

    def ping_then_deflate(self, *args, **kwargs):
        bench.router.send_multipart([b"compute", cp.encode(cp.Ping(73))])
        time.sleep(0.05)  # inproc delivery before the deflate starts; the assertion below waits for nothing
        return deflate(self, *args, **kwargs)

    monkeypatch.setattr(ReferenceSet, "to_bytes", ping_then_deflate)
    bench.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    bench.drain()
    bench.messages.clear()
    reply = bench.install("1", manifest.sha256)
    assert reply.ok, reply.reason
    said = [m for m in bench.drain() if isinstance(m, (cp.Pong, cp.Reply))]
    assert said == [cp.Pong(73), reply]  # within the work, not after it: the loop never ran here


@pytest.mark.req("CMP-012", "MDL-004")
def test_an_install_answers_pings_while_the_store_activates_the_model(bench, monkeypatch):
    """Found in audit: the store's activation (a CPU open of the model, its hashes, the writes with fsync and the
    read-back) is one call, 3.1 s here for a model of 381 MiB, and MODEL_INSTALL answered no ping through it. It
    runs on a thread of its own now: a ping sent as it begins is answered while it is still under way, and the
    install completes with the version active."""
    manifest = pack_full(tiny(1.0), "tiny", "1", ALICE, ALICE_KEY, bench.staging, REF_X, 1e-5).manifest
    store = bench.worker.store
    activate = store.activate
    answered_within = []

    def ping_then_activate(*args, **kwargs):
        bench.router.send_multipart([b"compute", cp.encode(cp.Ping(74))])
        answered_within.append(_first(bench, cp.Pong, PONG_WAIT_S))  # the activation has not begun: it waits on nothing
        return activate(*args, **kwargs)

    monkeypatch.setattr(store, "activate", ping_then_activate)
    bench.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    bench.drain()
    reply = bench.install("1", manifest.sha256)
    assert answered_within == [cp.Pong(74)]
    assert reply.ok, reply.reason
    assert store.state("tiny").active.version == "1"


@pytest.mark.req("MDL-002", "MDL-008")
def test_a_signed_delta_with_an_empty_base_field_is_refused_naming_the_field(bench):
    """Found in audit: a delta file (signed: a ground tool's fault, not an attacker's) whose base_sha256 array was
    empty raised IndexError out of its parse, and MODEL_INSTALL failed with 'the worker could not handle
    InstallModel (IndexError: index 0 is out of bounds ...)', naming neither the file nor the field."""
    base = pack_full(tiny(1.0), "tiny", "1", ALICE, ALICE_KEY, bench.staging, REF_X, 1e-5).manifest
    assert bench.install("1", base.sha256).ok
    files = StagedFiles.of("tiny")
    delta = npz_bytes({"base_sha256": np.array([], np.str_), "result_sha256": np.array("a" * 64),
                       "names": np.array(["scale"]), "t00000": np.array([2.0], np.float32)})
    (bench.staging / files.delta).write_bytes(delta)
    (bench.staging / files.model).unlink()
    manifest = resign(bench.staging, "tiny", version="2", kind="delta", sha256="b" * 64,
                      base_sha256=base.sha256, delta_sha256=sha256_hex(delta))
    reply = bench.install("2", manifest.sha256)
    assert not reply.ok
    assert "delta: base_sha256" in reply.reason and "IndexError" not in reply.reason, reply.reason
    assert bench.worker.store.state("tiny").active.version == "1"
    with pytest.raises(PackageError, match="base_sha256"):
        Delta.from_bytes(delta)


@pytest.mark.req("CMP-012", "MDL-002")
def test_an_install_answers_pings_while_it_reads_and_hashes_the_package(bench, monkeypatch):
    """Found in audit: the install's checks before any session (each staged file read and hashed, the model parsed
    for external data, a delta applied) are one call, 7.5 s here for a model of 1.8 GiB (under the 2 GiB - 1
    allowed), answering no ping. They run on a thread of their own now: a ping sent as they begin is answered
    while they are under way; a refusal from them is still the install's reply."""
    manifest = pack_full(tiny(1.0), "tiny", "1", ALICE, ALICE_KEY, bench.staging, REF_X, 1e-5).manifest
    checks = UplinkChecks.candidate
    answered_within = []

    def ping_then_check(self, *args, **kwargs):
        bench.router.send_multipart([b"compute", cp.encode(cp.Ping(75))])
        answered_within.append(_first(bench, cp.Pong, PONG_WAIT_S))  # the checks have not begun: they wait on nothing
        return checks(self, *args, **kwargs)

    monkeypatch.setattr(UplinkChecks, "candidate", ping_then_check)
    bench.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    bench.drain()
    refused = bench.install("1", "0" * 64)  # the command's SHA-256 is not the signed one
    assert answered_within == [cp.Pong(75)]
    assert not refused.ok and "the signed manifest" in refused.reason, refused.reason
    assert bench.install("1", manifest.sha256).ok


@pytest.mark.req("CMP-012")
def test_a_sessions_open_answers_pings_while_it_hashes_the_model(bench, monkeypatch):
    """Found in audit: before its open's own thread starts, the worker hashed the model whole (1.8 s here for a
    model of 1.8 GiB, a job's or an install's), answering no ping. Hashed a part at a time now, the keep-alive
    after each: here in parts of 64 bytes, so a model of a few hundred bytes is several parts."""
    from flight.compute import worker as worker_module

    manifest = pack_full(tiny(1.0), "tiny", "1", ALICE, ALICE_KEY, bench.staging, REF_X, 1e-5).manifest
    monkeypatch.setattr(worker_module, "KEEPALIVE_BYTES", 64)
    kept, before_providers = [], []
    keepalive, open_session = bench.worker._keepalive, bench.worker._open_session
    to_try = worker_module.providers_to_try

    def counted():
        kept.append(1)
        keepalive()

    def counted_from_here(*args, **kwargs):
        kept.clear()
        return open_session(*args, **kwargs)

    def providers_to_try(*args, **kwargs):  # what _open_session asks right after the hash
        before_providers.append(len(kept))
        return to_try(*args, **kwargs)

    monkeypatch.setattr(bench.worker, "_keepalive", counted)
    monkeypatch.setattr(bench.worker, "_open_session", counted_from_here)
    monkeypatch.setattr(worker_module, "providers_to_try", providers_to_try)
    assert bench.install("1", manifest.sha256).ok
    assert before_providers and before_providers[0] >= len(tiny(1.0)) // 64


@pytest.mark.req("CMP-012", "MDL-004")
def test_an_install_stuck_past_compute_open_s_falls_silent_for_the_watchdog_and_answers_requests_busy(
        bench, monkeypatch):
    """Found in review: an install's step on its thread was kept alive for ever, so one wedged (a read or an fsync
    that never returns) hid the hang from the agent's watchdog, and requests sent meanwhile waited unanswered. Past
    OPEN_BUSY_S a request is answered BUSY at once; past compute_open_s a ping goes unanswered until it ends."""
    from flight.compute import worker as worker_module
    from flight.link.dictionary import FailureCode

    manifest = pack_full(tiny(1.0), "tiny", "1", ALICE, ALICE_KEY, bench.staging, REF_X, 1e-5).manifest
    store = bench.worker.store
    activate = store.activate
    seen: dict[str, object] = {}
    monkeypatch.setattr(worker_module, "OPEN_BUSY_S", 0.0)
    monkeypatch.setattr(worker_module, "INSTALL_GRACE_S", 0.0)

    def stuck_activate(*args, **kwargs):
        bench.router.send_multipart([b"compute", cp.encode(cp.RollbackModel(9001, "tiny"))])
        seen["busy"] = _first(bench, cp.Reply, PONG_WAIT_S)
        bench.worker.open_limit_s = 0.0  # past compute_open_s from here on
        time.sleep(2 * worker_module.OPEN_POLL_S)  # a turn of the main thread's loop sees it
        bench.router.send_multipart([b"compute", cp.encode(cp.Ping(75))])
        seen["pong_while_stuck"] = _first(bench, cp.Pong, 1.0)  # a bound: answered, it comes within 20 ms
        return activate(*args, **kwargs)

    monkeypatch.setattr(store, "activate", stuck_activate)
    bench.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    bench.drain()
    reply = bench.install("1", manifest.sha256)
    busy = seen["busy"]
    assert isinstance(busy, cp.Reply) and busy.req_id == 9001 and not busy.ok and busy.code == FailureCode.BUSY
    assert "installing a model" in busy.reason
    assert seen["pong_while_stuck"] is None
    assert reply.ok, reply.reason


@pytest.mark.req("CMP-012", "MDL-004")
def test_an_install_whose_reference_open_took_most_of_compute_open_s_still_answers_through_its_activation(
        bench, monkeypatch):
    """Found in review: the whole install's limit counted the reference check's open too (a TensorRT build may take
    most of compute_open_s, within its own limit), and the activation after it began already out of time, silent:
    the watchdog replaced a worker at a good install's last step. The agent waits 60 s past compute_open_s; the
    install answers until compute_open_s and INSTALL_GRACE_S have passed."""
    from flight.compute.worker import Worker

    worker = bench.worker
    worker.open_limit_s = 1800.0
    ahead_s = [0.0]
    real_clock = Worker.clock_s
    monkeypatch.setattr(Worker, "clock_s", lambda self: real_clock(self) + ahead_s[0])
    reference_check = UplinkChecks.reference_check

    def long_build(self, *args, **kwargs):
        result = reference_check(self, *args, **kwargs)
        ahead_s[0] += 1801.0  # the candidate's checks and a build of 1794 s: within the open's own 1800 s
        return result

    monkeypatch.setattr(UplinkChecks, "reference_check", long_build)
    manifest = pack_full(tiny(1.0), "tiny", "1", ALICE, ALICE_KEY, bench.staging, REF_X, 1e-5).manifest
    activate = worker.store.activate
    seen: dict[str, object] = {}

    def ping_then_activate(*args, **kwargs):
        bench.router.send_multipart([b"compute", cp.encode(cp.Ping(77))])
        seen["pong"] = _first(bench, cp.Pong, PONG_WAIT_S)
        return activate(*args, **kwargs)

    monkeypatch.setattr(worker.store, "activate", ping_then_activate)
    bench.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    bench.drain()
    reply = bench.install("1", manifest.sha256)
    assert seen["pong"] == cp.Pong(77)
    assert reply.ok, reply.reason
