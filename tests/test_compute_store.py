"""The model store: checked on every load, refused with the hashes, golden copy as the way back."""

import errno
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")  # build-time dependency: only to make small test models
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from flight.compute.store import (  # noqa: E402
    GOLDEN_DIR,
    GOLDEN_MODE,
    Copy,
    InvalidModel,
    ModelIntegrityError,
    ModelNotFound,
    ModelStore,
    NoGoodCopy,
    Problem,
    Provenance,
    external_data,
)
import flight.compute.store as store_module  # noqa: E402
from flight.storage import read_checked_json  # noqa: E402


def tiny_model(scale: float) -> bytes:
    """y = x * scale, x float32 [N, 3]: a real model onnxruntime loads, distinct per ``scale``."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(np.array([scale], dtype=np.float32), "scale")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


V1, V2 = tiny_model(2.0), tiny_model(3.0)


def flip_byte(path, offset=-20):
    """Invert one byte in place (a single-event upset, or worse); chmod first if read-only."""
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_install_load_round_trip(tmp_path):
    store = ModelStore(tmp_path / "models")
    assert store.list() == [] and store.verify_all() == []  # a store that does not exist yet is empty
    entry = store.install("tiny", "1.0", V1)
    assert (entry.name, entry.version, entry.sha256, entry.size_bytes) == ("tiny", "1.0", sha(V1), len(V1))
    assert [(t.name, t.shape, t.dtype) for t in entry.inputs] == [("x", ("N", 3), "tensor(float)")]
    assert [t.name for t in entry.outputs] == ["y"]

    loaded = store.load("tiny")
    assert loaded.bytes == V1 and loaded.sha256 == sha(V1) and loaded.version == "1.0"
    assert loaded.from_golden is False and loaded.fallback_reason == ""
    assert loaded.path == tmp_path / "models" / "tiny@1.0.onnx" and loaded.path.read_bytes() == V1

    # the manifest is flight.storage's checked JSON, and lists what the brief asks for
    body = read_checked_json(tmp_path / "models" / "manifest.json")
    assert body["models"]["tiny"] == entry.to_json()
    assert set(body["models"]["tiny"]) == {"name", "version", "file", "sha256", "size_bytes", "inputs", "outputs"}
    assert store.list() == [entry]
    # a fresh store on the same directory reads the same thing (nothing cached in memory)
    assert ModelStore(tmp_path / "models").load("tiny").bytes == V1


def test_new_version_replaces_the_working_copy_and_removes_the_old_file(tmp_path):
    store = ModelStore(tmp_path)
    store.install("tiny", "1", V1)
    store.install("other", "1", V1)
    path_v2 = tmp_path / "v2.onnx"
    path_v2.write_bytes(V2)
    store.install("tiny", "2", path_v2)  # from a path, as an uplinked file would arrive
    assert store.load("tiny").version == "2" and store.load("tiny").bytes == V2
    assert not (tmp_path / "tiny@1.onnx").exists()
    assert store.load("other").bytes == V1  # the other model's entry survived the rewrite
    assert [e.name for e in store.list()] == ["other", "tiny"]


@pytest.mark.req("CMP-004")
def test_one_flipped_byte_is_refused_with_both_hashes(tmp_path):
    store = ModelStore(tmp_path)
    store.install("tiny", "1", V1)
    flip_byte(tmp_path / "tiny@1.onnx")
    corrupt = (tmp_path / "tiny@1.onnx").read_bytes()
    with pytest.raises(ModelIntegrityError) as err:
        store.load("tiny")
    e = err.value
    assert e.problem is Problem.HASH_MISMATCH and e.copy is Copy.WORKING and e.name == "tiny"
    assert e.expected_sha256 == sha(V1) and e.actual_sha256 == sha(corrupt)
    assert "SHA-256 mismatch" in str(e) and sha(V1)[:12] in str(e) and sha(corrupt)[:12] in str(e)
    assert "load_or_golden()" in str(e)  # says what to do
    [problem] = store.verify_all()
    assert (problem.copy, problem.name, problem.problem) == (Copy.WORKING, "tiny", Problem.HASH_MISMATCH)


def test_truncated_and_missing_files(tmp_path):
    store = ModelStore(tmp_path)
    store.install("tiny", "1", V1)
    path = tmp_path / "tiny@1.onnx"
    path.write_bytes(V1[:-7])  # an upload cut off
    with pytest.raises(ModelIntegrityError, match=f"{len(V1) - 7} bytes, manifest says {len(V1)}") as err:
        store.load("tiny")
    assert err.value.problem is Problem.HASH_MISMATCH
    path.unlink()
    with pytest.raises(ModelIntegrityError, match="file missing") as err:
        store.load("tiny")
    assert err.value.problem is Problem.MISSING_FILE
    assert err.value.expected_sha256 == sha(V1) and err.value.actual_sha256 is None
    assert [p.problem for p in store.verify_all()] == [Problem.MISSING_FILE]


@pytest.mark.req("CMP-004")
def test_golden_fallback_is_used_verified_and_reported(tmp_path):
    store = ModelStore(tmp_path)
    store.install("tiny", "1", V1, golden=True)
    store.install("tiny", "2", V2)  # a later uplink: working copy only
    assert store.load_or_golden("tiny").from_golden is False  # healthy: no fallback

    flip_byte(tmp_path / "tiny@2.onnx")
    loaded = store.load_or_golden("tiny")
    assert loaded.from_golden is True and loaded.version == "1" and loaded.bytes == V1
    assert loaded.path == tmp_path / "golden" / "tiny@1.onnx"
    assert "SHA-256 mismatch" in loaded.fallback_reason and "working copy" in loaded.fallback_reason

    # the golden copy is checked too: when it is also bad, nothing is returned
    flip_byte(tmp_path / "golden" / "tiny@1.onnx")
    with pytest.raises(NoGoodCopy) as err:
        store.load_or_golden("tiny")
    assert err.value.working.problem is Problem.HASH_MISMATCH and err.value.golden.problem is Problem.HASH_MISMATCH
    assert err.value.copy is Copy.GOLDEN and "reinstall the golden copy" in str(err.value)


def test_no_golden_copy_means_the_working_error_stands(tmp_path):
    store = ModelStore(tmp_path)
    store.install("tiny", "1", V1)
    (tmp_path / "tiny@1.onnx").unlink()
    with pytest.raises(ModelIntegrityError) as err:
        store.load_or_golden("tiny")
    assert err.value.problem is Problem.MISSING_FILE and err.value.copy is Copy.WORKING
    with pytest.raises(ModelNotFound, match="no model 'nope' in the working copy"):
        store.load_or_golden("nope")


def test_golden_copy_is_read_only_and_never_written_by_normal_operations(tmp_path):
    store = ModelStore(tmp_path)
    store.install("tiny", "1", V1, golden=True)
    golden = tmp_path / "golden"
    files = sorted(golden.iterdir())
    assert [f.name for f in files] == ["manifest.json", "tiny@1.onnx"]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == GOLDEN_MODE == 0o444
    before = {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in files}

    # normal operations: installs of the working copy, loads, fallbacks, verification
    store.install("tiny", "2", V2)
    store.load("tiny")
    flip_byte(tmp_path / "tiny@2.onnx")
    assert store.load_or_golden("tiny").from_golden
    store.verify_all()
    store.list(Copy.GOLDEN)
    assert {f.name: (f.stat().st_mtime_ns, f.read_bytes()) for f in sorted(golden.iterdir())} == before

    # a golden file that lost its protection is a selftest finding
    os.chmod(golden / "tiny@1.onnx", 0o644)
    problems = store.verify_all()
    assert [(p.copy, p.name, p.problem) for p in problems] == [
        (Copy.WORKING, "tiny", Problem.HASH_MISMATCH),
        (Copy.GOLDEN, "tiny", Problem.GOLDEN_WRITABLE),
    ]
    assert "mode 644" in problems[1].detail


def test_golden_install_replaces_a_read_only_golden_copy(tmp_path):
    store = ModelStore(tmp_path, golden_root=tmp_path / "ro")  # e.g. a separate partition
    store.install("tiny", "1", V1, golden=True)
    store.install("tiny", "2", V2, golden=True)
    assert store.load_golden("tiny").bytes == V2
    assert sorted(p.name for p in (tmp_path / "ro").iterdir()) == ["manifest.json", "tiny@2.onnx"]
    assert stat.S_IMODE((tmp_path / "ro" / "tiny@2.onnx").stat().st_mode) == 0o444


V3 = tiny_model(4.0)


@pytest.mark.req("MDL-004")
@pytest.mark.parametrize("how", ["activate", "install"])
def test_a_golden_install_whose_golden_copy_cannot_be_written_changes_nothing(tmp_path, how):
    """Found in audit: the working manifest was committed first, so a golden partition that refused the
    write (read-only, full) left the new version active on disk while the install was refused."""
    store = ModelStore(tmp_path / "models", golden_root=tmp_path / "ro")
    store.install("tiny", "1", V1, golden=True)
    store.activate("tiny", "2", V2, Provenance("op", True))
    before = read_checked_json(tmp_path / "models" / "manifest.json")
    files = sorted(p.name for p in (tmp_path / "models").iterdir())
    # A rename over a directory that is not empty fails, as a write to a read-only or full partition does.
    (tmp_path / "ro" / "tiny@3.onnx" / "held").mkdir(parents=True)
    with pytest.raises(OSError):
        if how == "activate":
            store.activate("tiny", "3", V3, Provenance("op", True), reference=b"ref", golden=True)
        else:
            store.install("tiny", "3", V3, golden=True, reference=b"ref")
    assert read_checked_json(tmp_path / "models" / "manifest.json") == before
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == files  # its new files gone with it
    state = store.state("tiny")
    assert (state.active.version, state.fallback.version, state.probation) == ("2", "1", True)
    assert store.load_golden("tiny").bytes == V1


@pytest.mark.req("MDL-004")
def test_a_golden_install_of_a_version_the_golden_copy_holds_with_other_bytes_is_refused_before_any_write(tmp_path):
    """Found in review: the golden file would be replaced before the manifest that vouches for it, so a
    write that then failed (or a power cut) left the only known-good copy failing its SHA-256."""
    store = ModelStore(tmp_path / "models", golden_root=tmp_path / "ro")
    store.install("tiny", "1", V1, golden=True)
    store.activate("tiny", "2", V2, Provenance("op", True))
    store.activate("tiny", "3", V3, Provenance("op", True))

    def files():
        return {p.relative_to(tmp_path): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}

    before = files()
    with pytest.raises(InvalidModel, match="in the golden copy already, with other bytes"):
        store.activate("tiny", "1", tiny_model(5.0), Provenance("op", True), golden=True)
    assert files() == before and store.verify_all() == []
    store.install("tiny", "1", V1, golden=True)  # the very bytes it holds: taken
    assert store.load_golden("tiny").bytes == V1 and store.verify_all() == []


@pytest.mark.req("MDL-002")
def test_a_model_whose_weights_lie_in_an_external_file_is_refused_naming_the_tensor(tmp_path, monkeypatch):
    """Found in audit: onnxruntime reads an initializer's external data relative to its working directory
    even for a model given as bytes, so what would run is not what the store's SHA-256 checked."""
    monkeypatch.chdir(tmp_path)  # where onnxruntime would find the file
    np.array([2.0], np.float32).tofile(tmp_path / "scale.bin")
    model = onnx.load_from_string(V1)
    scale = model.graph.initializer[0]
    scale.ClearField("raw_data")
    scale.ClearField("float_data")
    scale.data_location = TensorProto.EXTERNAL
    scale.external_data.add(key="location", value="scale.bin")
    data = model.SerializeToString()
    with pytest.raises(InvalidModel, match="tensor 'scale' keeps its data in the file 'scale.bin'"):
        ModelStore(tmp_path / "models").install("tiny", "1", data)
    assert external_data(V1) == [] and external_data(data) == [("scale", "scale.bin")]
    # Sparse tensors too, which onnxruntime does read from beside it (found in review): an initializer's
    # indices, a Constant's sparse value.
    np.array([1, 2], np.int64).tofile(tmp_path / "idx.bin")
    values = numpy_helper.from_array(np.array([5.0, 7.0], np.float32), "w")
    indices = numpy_helper.from_array(np.array([1, 2], np.int64), "w_idx")
    indices.ClearField("int64_data")
    indices.data_location = TensorProto.EXTERNAL
    indices.external_data.add(key="location", value="idx.bin")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "sparse", [x], [y])
    graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [3]))
    sparse = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    constant = helper.make_model(helper.make_graph(
        [helper.make_node("Constant", [], ["c"], sparse_value=helper.make_sparse_tensor(values, indices, [3])),
         helper.make_node("Add", ["x", "c"], ["y"])], "constant", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    for data in (sparse, constant):
        assert external_data(data) == [("w_idx", "idx.bin")]
        with pytest.raises(InvalidModel, match="tensor 'w_idx' keeps its data in the file 'idx.bin'"):
            ModelStore(tmp_path / "models").install("tiny", "1", data)


@pytest.mark.req("MDL-006")
def test_files_an_install_cut_short_left_are_removed_at_the_next_start(tmp_path):
    """Found in audit: a power cut between an install's files and its manifest, or between the manifest
    and the deletion of the version it dropped, left a model's worth of flash behind for good."""
    store = ModelStore(tmp_path / "models")
    store.install("tiny", "1", V1, golden=True)
    store.activate("tiny", "2", V2, Provenance("op", True), reference=b"ref")
    models = tmp_path / "models"
    orphans = ["tiny@3.onnx", "tiny@3.ref.npz", "tiny@0.onnx", "other@1.onnx"]
    for name in orphans:  # what a cut install leaves: written before a manifest named them, or after it dropped them
        (models / name).write_bytes(b"left over")
    (models / "golden" / "tiny@0.onnx").write_bytes(b"left over")
    (models / "notes.txt").write_bytes(b"not the store's")  # not a file the store writes: never touched
    kept = sorted(p.name for p in models.iterdir() if p.name not in orphans)
    removed = store.remove_unreferenced()
    assert sorted(p.name for p in removed) == sorted([*orphans, "tiny@0.onnx"])
    assert sorted(p.name for p in models.iterdir()) == kept
    assert sorted(p.name for p in (models / "golden").iterdir()) == ["manifest.json", "tiny@1.onnx"]
    assert store.verify_all() == [] and store.load("tiny").bytes == V2 and store.load_fallback("tiny").bytes == V1
    # A copy whose manifest does not read keeps every file, for its repair.
    (models / "tiny@9.onnx").write_bytes(b"left over")
    flip_byte(models / "manifest.json", 30)
    assert store.remove_unreferenced() == [] and (models / "tiny@9.onnx").exists()


def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.req("MDL-004", "MDL-006")
@pytest.mark.parametrize("fails", ["manifest", "reference", "golden manifest"])
def test_an_install_refused_by_the_disk_leaves_none_of_its_files_behind(tmp_path, monkeypatch, fails):
    """Found in audit: a refused install (a full disk, the usual cause, as its manifest or reference set was
    written) left the files it had written until the worker's next start: the room the next try needed was
    taken by the try that failed. The disk's refusal is injected where the store writes (a full filesystem
    needs a mount), or made by a directory where a file is to go (a rename over it fails)."""
    models = tmp_path / "models"
    store = ModelStore(models)
    store.install("tiny", "1", V1, golden=True)
    store.activate("tiny", "2", V2, Provenance("op", True), reference=b"ref 2")

    def files():
        return {p.relative_to(tmp_path): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}

    before = files()
    if fails == "manifest":
        monkeypatch.setattr(store_module, "write_checked_json", _disk_full)
    elif fails == "reference":
        (models / "tiny@3.ref.npz" / "held").mkdir(parents=True)
    else:  # the working copy committed, then the golden copy's manifest refused: the working one is put back
        real = store_module.write_checked_json
        monkeypatch.setattr(store_module, "write_checked_json",
                            lambda path, body: _disk_full() if "golden" in str(path) else real(path, body))
    with pytest.raises(OSError):
        store.activate("tiny", "3", V3, Provenance("op", True), reference=b"ref 3", golden=fails == "golden manifest")
    monkeypatch.undo()
    assert files() == before  # no tiny@3.onnx, tiny@3.ref.npz, golden/tiny@3.onnx left
    if fails == "reference":
        shutil.rmtree(models / "tiny@3.ref.npz")
    state = store.state("tiny")
    assert (state.active.version, state.fallback.version) == ("2", "1") and store.verify_all() == []
    store.activate("tiny", "3", V3, Provenance("op", True), reference=b"ref 3")  # and the next try goes in
    assert store.load("tiny").bytes == V3


@pytest.mark.req("MDL-006")
def test_a_refused_install_deletes_no_file_it_did_not_write(tmp_path, monkeypatch):
    """Found in review: a golden file with no golden manifest (lost, or never written), the disk full: the refused
    install deleted it, though it never wrote it (the missing manifest read as one naming nothing), where
    remove_unreferenced keeps it for its repair."""
    models = tmp_path / "models"
    (models / GOLDEN_DIR).mkdir(parents=True)
    (models / GOLDEN_DIR / "tiny@1.onnx").write_bytes(V1)
    real = store_module.write_atomic

    def full_in_golden(path, data, **kwargs):
        if GOLDEN_DIR in Path(path).parts:
            _disk_full()
        return real(path, data, **kwargs)

    monkeypatch.setattr(store_module, "write_atomic", full_in_golden)
    with pytest.raises(OSError):
        ModelStore(models).install("tiny", "1", V1, golden=True)
    monkeypatch.undo()
    assert (models / GOLDEN_DIR / "tiny@1.onnx").read_bytes() == V1


def test_manifest_corruption_is_detected(tmp_path):
    store = ModelStore(tmp_path)
    store.install("tiny", "1", V1, golden=True)
    manifest = tmp_path / "manifest.json"
    envelope = json.loads(manifest.read_text())
    envelope["body"] = envelope["body"].replace('"1"', '"9"')  # an edit the SHA-256 does not cover
    manifest.write_text(json.dumps(envelope))
    corrupt_text = manifest.read_text()

    with pytest.raises(ModelIntegrityError, match="manifest corrupt") as err:
        store.load("tiny")
    assert err.value.problem is Problem.MANIFEST_CORRUPT and "SHA-256 mismatch" in err.value.detail
    # the golden copy has its own manifest, so the model is still there
    assert store.load_or_golden("tiny").from_golden is True
    # an install refuses rather than write a manifest that forgot every other model
    with pytest.raises(ModelIntegrityError, match="manifest corrupt"):
        store.install("tiny", "2", V2)
    assert manifest.read_text() == corrupt_text
    [problem] = store.verify_all()
    assert (problem.copy, problem.name, problem.problem) == (Copy.WORKING, None, Problem.MANIFEST_CORRUPT)

    manifest.write_bytes(b"\x00 not json")
    with pytest.raises(ModelIntegrityError, match="manifest corrupt.*unreadable"):
        store.list()


def test_manifest_with_a_valid_checksum_but_a_bad_entry_is_refused(tmp_path):
    from flight.storage import write_checked_json

    store = ModelStore(tmp_path)
    store.install("tiny", "1", V1)
    body = read_checked_json(tmp_path / "manifest.json")
    body["models"]["tiny"]["file"] = "../../etc/passwd"  # checksum fine, content not
    write_checked_json(tmp_path / "manifest.json", body)
    with pytest.raises(ModelIntegrityError, match="manifest corrupt.*is not 'tiny@1.onnx'"):
        store.load("tiny")


def test_install_refuses_bad_input(tmp_path):
    store = ModelStore(tmp_path)
    with pytest.raises(InvalidModel, match="onnxruntime cannot load"):
        store.install("junk", "1", b"\x08\x01 definitely not a model")
    with pytest.raises(InvalidModel, match="letters, digits"):
        store.install("../escape", "1", V1)
    with pytest.raises(InvalidModel, match="letters, digits"):
        store.install("tiny", "1@2", V1)
    assert list(tmp_path.iterdir()) == []  # nothing written
    with pytest.raises(ModelNotFound, match=r"installed: none"):
        store.load("tiny")


@pytest.mark.req("CMP-004")
def test_a_corrupt_working_manifest_is_moved_aside_and_rebuilt_from_the_golden_copy(tmp_path):
    """Found in audit: a flipped bit in the working manifest stopped every install (each reads it first)
    and the worker at each start, with an intact golden copy. Rebuilt, the golden versions are active
    again and an install works; what the golden copy lacks is gone from the store (nothing vouches for it)."""
    store = ModelStore(tmp_path)
    store.install("tiny", "1", V1, golden=True)
    store.activate("tiny", "2", V2, Provenance("ground", True, "", 0.0))
    store.install("other", "1", tiny_model(5.0))
    manifest = tmp_path / "manifest.json"
    flip_byte(manifest, 40)
    corrupt = manifest.read_bytes()
    error, names = store.rebuild_working()
    assert error.problem is Problem.MANIFEST_CORRUPT and names == ["tiny"]
    assert (tmp_path / "manifest.json.corrupt").read_bytes() == corrupt  # kept for the ground to look at
    loaded = store.load("tiny")
    assert loaded.bytes == V1 and not loaded.from_golden and store.state("tiny").fallback is None
    with pytest.raises(ModelNotFound):
        store.load("other")
    store.install("other", "2", V2)  # an install works again
    assert store.load("other").bytes == V2 and store.rebuild_working() is None
    assert store.verify_all() == []
    # The golden manifest corrupt too: nothing trusted to rebuild from; the working one is left as it is.
    flip_byte(manifest, 40)
    flip_byte(tmp_path / "golden" / "manifest.json", 40)
    before = manifest.read_bytes()
    with pytest.raises(ModelIntegrityError, match="golden copy"):
        store.rebuild_working()
    assert manifest.read_bytes() == before


@pytest.mark.req("MDL-004", "MDL-006")
@pytest.mark.parametrize("full", ["tiny@3.onnx", "golden/tiny@3.onnx", "manifest.json"])
def test_a_full_disk_is_said_naming_the_file_and_its_size(tmp_path, monkeypatch, full):
    """Found in audit: an install on a full disk was refused with "OSError: [Errno 28] No space left on device",
    naming no file, size or cure. The disk's refusal is injected where the store writes (a full filesystem needs
    a mount); what is said is an OSError still, so every handler of one takes it as before."""
    models = tmp_path / "models"
    store = ModelStore(models)
    store.install("tiny", "1", V1, golden=True)
    store.activate("tiny", "2", V2, Provenance("op", True))
    real_atomic, real_json = store_module.write_atomic, store_module.write_checked_json

    def atomic(path, data, **kwargs):
        if Path(path).relative_to(models).as_posix() == full:
            _disk_full()
        return real_atomic(path, data, **kwargs)

    def checked(path, body):
        if Path(path).relative_to(models).as_posix() == full:
            _disk_full()
        return real_json(path, body)

    monkeypatch.setattr(store_module, "write_atomic", atomic)
    monkeypatch.setattr(store_module, "write_checked_json", checked)
    with pytest.raises(OSError) as refused:
        store.activate("tiny", "3", V3, Provenance("op", True), golden=True)
    monkeypatch.undo()
    copy = "golden" if full.startswith("golden/") else "working"
    size = "(" if full == "manifest.json" else f"({len(V3)} bytes, "  # a manifest's size is not known before
    assert refused.value.errno == errno.ENOSPC
    said = str(refused.value)
    assert f"model store, {copy} copy: no room on the disk for {full.split('/')[-1]} {size}" in said, said
    assert said.endswith("bytes free); the store is as it was: free room (FILE_DELETE) and send it again"), said
    state = store.state("tiny")
    assert (state.active.version, state.fallback.version) == ("2", "1") and store.load_golden("tiny").bytes == V1
    assert store.verify_all() == []
