"""The ground's reader of product receipts (ground/receipts.py, ``sunlit-ground product show``) on
products a real worker wrote: what it vouches for, what it refuses, and what it says when the tiles
and the receipt disagree."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from flight.compute import protocol as cp
from flight.compute.checks import FAILED, PASSED, RECEIPT_VERSION, UNCHECKED
from flight.compute.usecase.shipped import MODEL_NAME, load_held_out
from flight.link.definitions import Admission, FluxClass, JobKind
from ground.cli import main
from ground.receipts import ProductError, is_product_name, read_product
from tests.model_helpers import WorkerBench

TILES = load_held_out().tiles.astype(np.float32)
SAA = cp.Radiation(FluxClass.SAA, True, -25.0, 5700.0)


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    """Two products of a real worker: job 1 clean, job 2 with tiles its checks failed (a weight made NaN
    in the owned buffer and every golden copy alike: no vote repairs it)."""
    root = tmp_path_factory.mktemp("receipts")
    bench = WorkerBench(root / "compute", allow_unsigned=True)
    try:
        bench.worker.install_shipped_models()
        bench.worker._handle(cp.Admit(Admission.ALL, 1, 8, 1.0, None, "test", radiation=SAA,  # noqa: SLF001
                                      double_run_fraction=0.0, double_run_all_in_saa=False, scrub_weights=True,
                                      abft_checks=True))
        bench.data_set("tiles", TILES[:24])
        assert bench.infer(1, "tiles", model=MODEL_NAME).state.value == "DONE"
        sc = bench.worker._session(MODEL_NAME).scrubber  # noqa: SLF001
        for view in (sc.owned_bytes("w2"), *(sc.golden_bytes(k, "w2") for k in range(3))):
            view[4 * 17 + 3] ^= np.uint8(1 << 6)
        assert bench.infer(2, "tiles", model=MODEL_NAME).state.value == "DONE"
        sha = bench.worker._session(MODEL_NAME).sha256  # noqa: SLF001
        rng = np.random.default_rng(0)  # job 3: a model trained on board
        np.savez(bench.root / "data" / "toy.npz", x=rng.normal(size=(256, 12)).astype(np.float32),
                 y=rng.integers(0, 3, 256))
        reply = bench.request(lambda r: cp.StartJob(r, cp.JobSpec(3, JobKind.TRAINING, "toy", steps=32, batch_size=16)))
        assert reply.ok, reply.reason
        for _ in range(200):
            if bench.worker.jobs[3].state.value not in ("QUEUED", "RUNNING"):
                break
            bench.worker.work_slice()
        assert bench.worker.jobs[3].state.value == "DONE", bench.worker.jobs[3].detail
        # Job 4: every batch run twice, neither the checksum pass nor scrubbed weights: nothing saw the weights.
        bench.worker._handle(cp.Admit(Admission.ALL, 1, 8, 1.0, None, "test", radiation=SAA,  # noqa: SLF001
                                      double_run_fraction=0.0, double_run_all_in_saa=True, scrub_weights=False,
                                      abft_checks=False))
        assert bench.infer(4, "tiles", model=MODEL_NAME).state.value == "DONE"
        # Job 5: the same with scrubbed weights, every weight checked before the tiles are released.
        bench.worker._handle(cp.Admit(Admission.ALL, 1, 8, 1.0, None, "test", radiation=SAA,  # noqa: SLF001
                                      double_run_fraction=0.0, double_run_all_in_saa=True, scrub_weights=True,
                                      abft_checks=False))
        assert bench.infer(5, "tiles", model=MODEL_NAME).state.value == "DONE"
    finally:
        bench.close()
    out = root / "compute" / "products"
    return {"clean": out / "job00001-tiles", "failed": out / "job00002-tiles", "sha": sha,
            "trained": out / "job00003-toy-trained", "doubled": out / "job00004-tiles",
            "doubled_scrubbed": out / "job00005-tiles"}


def show(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["product", "show", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.req("GND-058", "RAD-105")
def test_a_clean_product_is_vouched_for_from_its_npz_and_its_summary(products, capsys):
    for suffix in (".npz", ".json"):
        code, out, err = show(capsys, products["clean"].with_suffix(suffix))
        assert code == 0 and err == "", err
        assert "VOUCHED: every tile checked and passed" in out and "NOT VOUCHED" not in out
        assert f"sha256 {products['sha'][:16]}" in out and "abft+scrubbed" in out
        assert "24 passed, 0 failed, 0 unchecked of 24 tiles" in out and "environment  SAA, latitude -25.0" in out
    receipt = read_product(products["clean"].with_suffix(".npz"))
    assert receipt.vouched and receipt.model == MODEL_NAME and receipt.tiles == 24


@pytest.mark.req("GND-058", "RAD-105")
def test_tiles_passed_by_double_runs_alone_on_weights_nothing_checked_are_not_vouched_for(products, capsys):
    """A double run repeats a fault in a weight: with neither the checksum pass nor scrubbed weights, a
    product every tile of which passed its double run is not vouched for, and says why."""
    code, out, _ = show(capsys, products["doubled"].with_suffix(".npz"))
    receipt = read_product(products["doubled"].with_suffix(".npz"))
    assert receipt.check_status == "passed" and receipt.receipt["protection"] == "none"
    assert receipt.receipt["double_runs"] == 3 and not receipt.vouched and code == 1
    assert "NOT VOUCHED: every tile passed its checks, but with protection none" in out


@pytest.mark.req("GND-058", "RAD-105")
def test_double_runs_on_scrubbed_weights_are_vouched_for_from_receipt_version_2_only(products, capsys, tmp_path):
    """From receipt version 2 the board checks every weight before it releases tiles a double run passed,
    so such a product is vouched for; one from before (no version) is not, and says why; a version that is
    not one is refused, naming the field."""
    summary = json.loads(products["doubled_scrubbed"].with_suffix(".json").read_text())
    assert summary["receipt"]["protection"] == "scrubbed" and summary["receipt"]["receipt_version"] == 2
    assert read_product(products["doubled_scrubbed"].with_suffix(".npz")).vouched
    del summary["receipt"]["receipt_version"]
    old = tmp_path / "job00005-old.json"
    old.write_text(json.dumps(summary))
    code, out, _ = show(capsys, old)
    assert code == 1 and "not checked whole before release (receipt version 1" in out
    summary["receipt"]["receipt_version"] = "two"
    old.write_text(json.dumps(summary))
    with pytest.raises(ProductError, match="receipt 'receipt_version' is 'two'"):
        read_product(old)


@pytest.mark.req("GND-058", "RAD-105")
def test_a_product_with_failed_tiles_is_not_vouched_for_and_the_exit_code_says_so(products, capsys):
    code, out, err = show(capsys, products["failed"].with_suffix(".npz"), products["clean"].with_suffix(".npz"))
    assert code == 1 and err == ""
    assert "NOT VOUCHED: 16 of 24 tiles failed their checks" in out and "VOUCHED: every tile" in out  # both shown
    code, out, _ = show(capsys, "--json", products["failed"].with_suffix(".json"))
    [one] = json.loads(out)
    assert code == 1 and one["vouched"] is False and one["receipt"]["tiles_failed"] == 16


@pytest.mark.req("GND-058")
def test_tiles_that_disagree_with_their_receipt_are_said_and_not_vouched_for(products, capsys, tmp_path):
    """A product whose per-tile statuses were altered after its receipt was written (every failed tile
    made passed): the receipt still says 16 failed, and the reader says they disagree."""
    with np.load(products["failed"].with_suffix(".npz"), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert (arrays["check"] == FAILED).sum() == 16
    arrays["check"] = np.full_like(arrays["check"], PASSED)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    altered = tmp_path / "altered.npz"
    altered.write_bytes(buf.getvalue())
    code, out, _ = show(capsys, altered)
    assert code == 1 and "the product contradicts itself" in out
    assert "tiles_passed 8 against 24 tiles so marked" in out and "tiles_failed 16 against 0" in out


@pytest.mark.req("GND-058")
def test_files_that_are_not_products_are_refused_naming_the_file_and_field(products, capsys, tmp_path):
    summary = json.loads(products["clean"].with_suffix(".json").read_text())
    cases = {}
    for field, value in (("flux_class", None), ("tiles_failed", -1), ("model_sha256", "zz"), ("protection", "magic"),
                         ("scrub_age_s", 1e300), ("scrub_period_s", 2e9)):
        broken = json.loads(json.dumps(summary))
        if value is None:
            del broken["receipt"][field]
        else:
            broken["receipt"][field] = value
        path = tmp_path / f"{field}.json"
        path.write_text(json.dumps(broken))
        cases[path] = repr(field)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(products["clean"].with_suffix(".npz").read_bytes()[:300])
    cases[truncated] = "not a readable .npz"
    noise = tmp_path / "noise.bin"
    noise.write_bytes(bytes(range(256)) * 4)
    cases[noise] = "neither a product's .npz nor its .json summary"
    training = tmp_path / "trained.json"
    training.write_text(json.dumps({"job_id": 3, "steps": 10, "receipt": summary["receipt"]}))
    cases[training] = "summary 'source'"
    cases[tmp_path / "missing.npz"] = "missing.npz"
    cases[tmp_path] = "not a file"
    for path, said in cases.items():
        code, out, err = show(capsys, path)
        assert code == 2 and said in err and "Traceback" not in err + out, (path, err)
        with pytest.raises(ProductError):
            read_product(path)
    code, out, err = show(capsys, noise, products["clean"].with_suffix(".npz"))  # the good one still shown
    assert code == 2 and "VOUCHED: every tile checked and passed" in out and "noise.bin" in err


@pytest.mark.req("GND-058")
def test_receipts_that_contradict_themselves_or_their_header_are_not_vouched_for(products, capsys, tmp_path):
    """Found in review: a receipt saying "passed" over counts of failed or unchecked tiles, or naming
    another model than its header, was vouched for."""
    summary = json.loads(products["clean"].with_suffix(".json").read_text())
    cases = {"failed counts": {"tiles_passed": 20, "tiles_failed": 4},
             "unchecked counts": {"tiles_checked": 20, "tiles_passed": 20, "tiles_unchecked": 4},
             "another model": {"model_sha256": "cd" * 32}}
    for name, changes in cases.items():
        broken = json.loads(json.dumps(summary))
        broken["receipt"].update(changes)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(broken))
        code, out, err = show(capsys, path)
        assert code == 1 and "NOT VOUCHED: the product contradicts itself" in out and err == "", name


@pytest.mark.req("GND-058")
def test_hostile_files_are_refused_before_they_cost_memory_or_a_traceback(capsys, tmp_path):
    """Found in review: fields of the wrong kind, nesting past the parser's depth, an archive that
    unpacked to gigabytes and an array header claiming 10^13 elements each gave a traceback or took
    the memory."""
    bomb = tmp_path / "bomb.npz"
    buf = io.BytesIO()
    np.savez_compressed(buf, classes=np.zeros(70 * 1024 * 1024, np.uint8))  # 70 MB of zeros, a few KB packed
    bomb.write_bytes(buf.getvalue())
    assert bomb.stat().st_size < 1024 * 1024
    claims = tmp_path / "claims.npz"
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": "<f8", "fortran_order": False, "shape": (10**13,)})
    npy.write(bytes(32))
    with zipfile.ZipFile(claims, "w") as archive:
        archive.writestr("classes.npy", npy.getvalue())
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"tiles": 1, "receipt": {"model_sha256": "ab" * 32, "protection": ["abft"]}}))
    many = tmp_path / "many.npz"  # found in review: 270,000 arrays took the ground server's link thread 10 s
    with zipfile.ZipFile(many, "w") as archive:
        for k in range(17):
            archive.writestr(f"a{k}.npy", npy.getvalue())
    large = tmp_path / "large.json"  # and a 53 MB summary 6 s and 900 MB to parse
    large.write_text("[" + "{}," * 400_000 + "{}]")
    said = {bomb: "unpack to more than", claims: "claims (10000000000000,) of float64", deep: "not valid JSON",
            wrong: "receipt 'protection' is ['abft'], not a protection level", many: "17 arrays, more than",
            large: "more than a summary's 1048576"}
    for path, message in said.items():
        code, out, err = show(capsys, path)
        assert code == 2 and message in err and "Traceback" not in err, (path.name, err)


@pytest.mark.req("GND-058", "RAD-109")
def test_a_training_product_is_vouched_for_by_the_model_beside_its_summary(products, capsys, tmp_path):
    """A model trained on board (a real worker's job 3): its summary says the steps and what the step
    checks refused, and is vouched for when the model file beside it is the one its receipt names; one
    missing or changed is not; a summary with a field of the wrong kind is bad input."""
    summary = products["trained"].with_suffix(".json")
    code, out, err = show(capsys, summary)
    assert code == 0 and err == "", err
    assert "job 3 on toy: 32 steps" in out and "0 steps refused" in out and "VOUCHED" in out, out
    (made,) = json.loads(show(capsys, summary, "--json")[1])
    assert made["kind"] == "training" and made["vouched"] and made["receipt"]["check_status"] == "unchecked"
    moved = tmp_path / summary.name
    moved.write_bytes(summary.read_bytes())
    code, out, _ = show(capsys, moved)  # its model not fetched
    assert code == 1 and "is not beside it" in out
    model = bytearray(products["trained"].with_suffix(".onnx").read_bytes())
    model[len(model) // 2] ^= 1
    moved.with_suffix(".onnx").write_bytes(bytes(model))
    code, out, _ = show(capsys, moved)
    assert code == 1 and "against the receipt's" in out and "contradicts itself" in out
    for key, value in (("steps", "32"), ("loss", "NaN"), ("loss", 10**400), ("steps_refused", -1), ("source", None)):
        broken = json.loads(summary.read_text())
        broken[key] = value
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps(broken))
        code, out, err = show(capsys, path)
        assert code == 2 and repr(key) in err and "Traceback" not in err + out, (key, err)
    broken = json.loads(summary.read_text())
    broken["receipt"] = None  # found in audit: "receipt is NoneType"
    (tmp_path / "none.json").write_text(json.dumps(broken))
    code, out, err = show(capsys, tmp_path / "none.json")
    assert code == 2 and "none.json: no receipt (a summary written without one" in err, err


def summary_with(original, path, receipt=None, **fields):
    """A copy of the summary ``original`` at ``path``, its receipt updated with ``receipt`` and its
    top-level fields with ``fields``."""
    summary = json.loads(original.read_text())
    summary["receipt"].update(receipt or {})
    summary.update(fields)
    path.write_text(json.dumps(summary))
    return path


def npz_with(original, path, receipt=None, **arrays):
    """A copy of the .npz ``original`` at ``path``, its receipt updated with ``receipt`` and its arrays
    replaced by ``arrays`` (None: removed)."""
    with np.load(original, allow_pickle=False) as npz:
        out = {k: npz[k] for k in npz.files}
    if receipt:
        out["receipt"] = np.array(json.dumps({**json.loads(str(out["receipt"])), **receipt}))
    for key, value in arrays.items():
        if value is None:
            del out[key]
        else:
            out[key] = value
    buf = io.BytesIO()
    np.savez(buf, **out)
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.req("GND-058")
def test_a_receipt_newer_than_this_ground_is_not_vouched_for_and_says_to_update(products, capsys, tmp_path):
    """Found in review: a receipt of a version this build does not write was vouched for, read as
    version 2 and its new fields dropped. What those fields add (perhaps a tile quarantined, a check
    weakened) is unknown here: not vouched for, the verdict naming a few of them."""
    newer = RECEIPT_VERSION + 1
    fields = {f"field_{i}": i for i in range(7)}
    for path in (summary_with(products["clean"].with_suffix(".json"), tmp_path / "newer.json",
                              {"receipt_version": newer, **fields}),
                 npz_with(products["clean"].with_suffix(".npz"), tmp_path / "newer.npz",
                          {"receipt_version": newer, **fields})):
        code, out, err = show(capsys, path)
        assert code == 1 and err == "", err
        assert (f"NOT VOUCHED: receipt version {newer} is newer than this ground reads ({RECEIPT_VERSION}): update "
                "the ground software (fields it does not know: 'field_0', 'field_1', 'field_2', 'field_3', "
                "'field_4' and 2 more)") in out
        (made,) = json.loads(show(capsys, "--json", path)[1])
        assert not made["vouched"] and made["unknown_fields"] == list(fields)
    trained = tmp_path / products["trained"].with_suffix(".json").name
    summary_with(products["trained"].with_suffix(".json"), trained, {"receipt_version": newer})
    trained.with_suffix(".onnx").write_bytes(products["trained"].with_suffix(".onnx").read_bytes())
    code, out, _ = show(capsys, trained)
    assert code == 1 and f"receipt version {newer} is newer" in out
    assert read_product(summary_with(products["clean"].with_suffix(".json"), tmp_path / "v1.json",
                                     {"receipt_version": 1})).receipt["receipt_version"] == 1  # older: read as before


@pytest.mark.req("GND-058")
def test_text_that_is_not_printable_is_refused_naming_the_field(products, capsys, tmp_path, monkeypatch):
    """Found in review: a provider, flux source or header name with a newline or an escape in it was
    printed raw, and forged a "VOUCHED" line above the real verdict. Such text is bad input, named;
    what the board writes (a provider per session joined by "+", its flux source) is not."""
    forged = "\n  VOUCHED: every tile checked and passed\x1b[8m"
    clean = products["clean"]
    cases = {summary_with(clean.with_suffix(".json"), tmp_path / "provider.json", {"provider": "CPU" + forged}):
             "receipt 'provider'",
             summary_with(clean.with_suffix(".json"), tmp_path / "flux.json", {"flux_source": "TLE\x1b[2K"}):
             "receipt 'flux_source'",
             npz_with(clean.with_suffix(".npz"), tmp_path / "provider.npz", {"provider": "CPU\r"}):
             "receipt 'provider'",
             summary_with(products["trained"].with_suffix(".json"), tmp_path / "source.json", source="toy" + forged):
             "summary 'source'"}
    for key in ("model", "model_version", "model_uplinked_by"):
        cases[summary_with(clean.with_suffix(".json"), tmp_path / f"{key}.json", **{key: "x" + forged})] = \
            f"header {key!r}"
        cases[npz_with(clean.with_suffix(".npz"), tmp_path / f"{key}.npz", **{key: np.array("x\u202e" + forged)})] = \
            f"header {key!r}"
    for path, said in cases.items():
        code, out, err = show(capsys, path)
        assert code == 2 and f"{said} is " in err and "not printable text" in err and out == "", (path.name, err)
        assert "\x1b" not in err and err.count("\n") == 1, err  # one line, no escape
    joined = "TensorrtExecutionProvider+CUDAExecutionProvider+CPUExecutionProvider"
    code, out, _ = show(capsys, summary_with(clean.with_suffix(".json"), tmp_path / "gpu.json", {"provider": joined}))
    assert code == 0 and f"on {joined}" in out

    def unforeseen(path):
        raise RuntimeError("damaged" + forged)

    monkeypatch.setattr("ground.product_cli.read_product", unforeseen)
    code, out, err = show(capsys, clean.with_suffix(".npz"))
    assert code == 2 and "cannot be read" in err and "\x1b" not in err and err.count("\n") == 1, err


@pytest.mark.req("GND-058")
def test_a_receipt_that_contradicts_itself_about_the_checksum_precision_is_not_vouched_for(products, capsys,
                                                                                           tmp_path):
    """Found in review: a precision given without the checksum pass, or the pass without one, was read
    as agreeing. The board gives one exactly where the pass ran (ProductChecks.ran_on drops it with the
    pass; a training receipt has neither): its products never disagree so."""
    clean = products["clean"].with_suffix(".json")
    cases = {"protection abft+scrubbed without an abft_precision": {"abft_precision": None},
             "abft_precision tf32 under protection scrubbed, which has no checksum pass":
                 {"protection": "scrubbed", "abft_precision": "tf32"}}
    for said, changes in cases.items():
        code, out, err = show(capsys, summary_with(clean, tmp_path / "precision.json", changes))
        assert code == 1 and f"NOT VOUCHED: the product contradicts itself ({said})" in out and err == "", out
    for name in ("clean", "doubled", "doubled_scrubbed"):
        assert read_product(products[name].with_suffix(".npz")).disagreements == (), name
    assert read_product(products["trained"].with_suffix(".json")).disagreements == ()


@pytest.mark.req("GND-058")
def test_a_header_field_of_the_wrong_kind_in_the_npz_says_what_it_is(products, capsys, tmp_path):
    """Found in review: a header field stored as bytes, or as an array of several, was reported
    missing; it is there, of the wrong kind, and the message says which."""
    clean = products["clean"].with_suffix(".npz")
    cases = {npz_with(clean, tmp_path / "bytes.npz", model=np.array(b"cloud_screen")):
             "header 'model' is |S12 of shape (), not text",
             npz_with(clean, tmp_path / "several.npz", model_version=np.array(["1.0", "2.0"])):
             "header 'model_version' is <U3 of shape (2,), not text",
             npz_with(clean, tmp_path / "none.npz", model_uplinked_by=None): "header 'model_uplinked_by' is missing"}
    for path, said in cases.items():
        code, _, err = show(capsys, path)
        assert code == 2 and said in err, err


@pytest.mark.req("GND-058")
def test_the_npz_names_its_failed_and_unchecked_tiles_and_the_summary_says_where_they_are(products, capsys,
                                                                                        tmp_path):
    """An operator needs which tiles to drop or run again, not only how many: the .npz's statuses give
    them, the first few a line and all in --json; the summary has none, and says they are in the .npz."""
    code, out, _ = show(capsys, products["failed"].with_suffix(".npz"))
    with np.load(products["failed"].with_suffix(".npz"), allow_pickle=False) as npz:
        failed = np.flatnonzero(npz["check"] == FAILED).tolist()
    assert code == 1 and f"  failed       tiles {', '.join(map(str, failed))}\n" in out and "unchecked    " not in out
    status = np.full(24, FAILED, np.int8)
    status[[3, 5]] = UNCHECKED
    many = npz_with(products["clean"].with_suffix(".npz"), tmp_path / "many.npz",
                    {"check_status": "failed", "tiles_checked": 22, "tiles_passed": 0, "tiles_failed": 22,
                     "tiles_unchecked": 2}, check=status)
    code, out, _ = show(capsys, many)
    assert code == 1 and "contradicts" not in out
    every = [i for i in range(24) if i not in (3, 5)]  # 22 failed: the first 20 a line
    assert f"  failed       tiles {', '.join(map(str, every[:20]))} and 2 more\n" in out
    assert "  unchecked    tiles 3, 5\n" in out
    (made,) = json.loads(show(capsys, "--json", many)[1])
    assert made["failed_tiles"] == every and made["unchecked_tiles"] == [3, 5]
    code, out, _ = show(capsys, products["failed"].with_suffix(".json"))
    assert code == 1 and "per tile     statuses in the .npz, not read from this summary" in out
    (made,) = json.loads(show(capsys, "--json", products["failed"].with_suffix(".json"))[1])
    assert made["failed_tiles"] is None and made["unchecked_tiles"] is None


@pytest.mark.req("GND-058", "RAD-104")
def test_a_training_checkpoint_carries_its_receipt_and_is_vouched_for_by_its_digests(capsys, tmp_path):
    """Found in an audit: the checkpoints a running training job writes, downlinked as products are, had no
    receipt, and product show refused them ('more than a summary'). Each carries one in its header (the
    state's SHA-256, the protection and provider, the environment the agent predicted); the ground reads it
    without unpacking the arrays, vouches for it when its digests hold, and refuses one damaged or one
    written before checkpoints had receipts, naming why."""
    from flight.compute.checkpoint import Checkpoint, encode_checkpoint

    bench = WorkerBench(tmp_path / "compute", allow_unsigned=True)
    try:
        bench.worker._handle(cp.Admit(Admission.ALL, 1, 8, 1.0, None, "test", radiation=SAA,  # noqa: SLF001
                                      double_run_fraction=0.0, double_run_all_in_saa=False, scrub_weights=True))
        rng = np.random.default_rng(1)
        (bench.root / "data").mkdir(parents=True, exist_ok=True)
        np.savez(bench.root / "data" / "toy.npz", x=rng.normal(size=(256, 12)).astype(np.float32),
                 y=rng.integers(0, 2, 256))
        reply = bench.request(lambda r: cp.StartJob(r, cp.JobSpec(6, JobKind.TRAINING, "toy", steps=100_000,
                                                                  batch_size=16, checkpoint_every=8)))
        assert reply.ok, reply.reason
        ck = bench.root / "checkpoints" / "job00006.ck"
        for _ in range(200):
            if ck.exists():
                break
            bench.worker.work_slice()
        data = ck.read_bytes()
    finally:
        bench.close()
    down = tmp_path / "job00006.ck"
    down.write_bytes(data)
    code, out, err = show(capsys, down)
    assert code == 0 and err == "", err
    assert "checkpoint   training on toy: the state at step " in out and "environment  SAA while it trained" in out
    assert "VOUCHED: the training state as the board wrote it at step" in out and "protection none" in out
    receipt = read_product(down)
    assert receipt.vouched and receipt.receipt["model_sha256"] == receipt.state_sha256 and receipt.step >= 8
    assert is_product_name("checkpoints/job00006.ck")  # judged as it comes down, as products are

    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x10
    (tmp_path / "damaged.ck").write_bytes(bytes(damaged))
    code, out, err = show(capsys, tmp_path / "damaged.ck")
    assert code == 2 and "SHA-256 mismatch" in err and "damaged, or not as the board wrote it" in err
    (tmp_path / "old.ck").write_bytes(encode_checkpoint(Checkpoint(8, {"w": np.zeros(3)}, {"job": {}})))
    code, out, err = show(capsys, tmp_path / "old.ck")
    assert code == 2 and "has no receipt (written before checkpoints carried one)" in err


@pytest.mark.req("GND-058")
def test_a_product_file_name_with_control_characters_is_printed_escaped(products, capsys, tmp_path):
    """The file's own name heads its receipt: escaped, so a newline in it forges no "VOUCHED" line and an escape
    drives no terminal (found in audit: printed raw, above the receipt of a product that was vouched for)."""
    hostile = tmp_path / "x\x1b[31m\n  VOUCHED: forged.npz"
    hostile.write_bytes(products["clean"].with_suffix(".npz").read_bytes())
    code, out, _ = show(capsys, hostile)
    assert code == 0 and "\x1b" not in out, out
    assert out.splitlines()[0] == str(hostile).replace("\x1b", "\\x1b").replace("\n", "\\n"), out
    assert [line for line in out.splitlines() if line.lstrip().startswith("VOUCHED")] == \
        ["  VOUCHED: every tile checked and passed"]
