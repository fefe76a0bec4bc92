"""Signed model packages as data (manifest, keys, deltas), the agent's [models] configuration, and
the ground's `sunlit-ground model` tool end to end into a worker."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace

import numpy as np
import pytest

from flight.compute.package import (
    SMALL_ORDER_KEYS,
    Delta,
    DeltaError,
    KeyFileError,
    Manifest,
    PackageError,
    SignatureError,
    apply_delta,
    load_trusted_keys,
    make_delta,
    public_hex,
    sha256_hex,
)
from flight.config import ConfigError, parse_config
from flight.link.dictionary import FailureCode
from ground.cli import main as ground_main
from ground.model_package import pack_delta, pack_full, verify_package
from tests.model_helpers import (
    ALICE,
    ALICE_KEY,
    BOB_KEY,
    REF_X,
    WorkerBench,
    stage_by_hand,
    tiny,
    trusted_file,
    with_external_weights,
)

SHA_A, SHA_B = "a" * 64, "b" * 64


def manifest(**changes) -> Manifest:
    base = Manifest("tiny", "1", "full", SHA_A, 100, ALICE, "2026-11-18T00:00:00Z", SHA_B, SHA_A, 1e-3)
    return replace(base, **changes)


@pytest.mark.req("MDL-001")
def test_a_manifest_round_trips_and_its_signature_covers_every_field():
    signed = manifest().sign(ALICE_KEY)
    back = Manifest.from_bytes(signed.to_bytes())
    assert back == signed
    back.verify({ALICE: bytes.fromhex(public_hex(ALICE_KEY))})
    for field, value in [("version", "2"), ("sha256", SHA_B), ("tolerance", 0.5), ("uplinked_by", "mallory"),
                         ("reference_inputs_sha256", SHA_B), ("created_utc", "2030-01-01T00:00:00Z")]:
        altered = replace(signed, **{field: value})
        with pytest.raises(SignatureError):
            altered.verify({ALICE: bytes.fromhex(public_hex(ALICE_KEY)), "mallory": bytes.fromhex(public_hex(ALICE_KEY))})
    with pytest.raises(SignatureError, match="not signed"):
        manifest().verify({ALICE: bytes(32)})
    with pytest.raises(PackageError, match=r"unknown fields \['extra'\]"):
        doc = json.loads(signed.to_bytes())
        doc["body"]["extra"] = 1
        Manifest.from_bytes(json.dumps(doc).encode())
    with pytest.raises(PackageError, match="64 hex digits for a delta"):
        manifest(kind="delta")
    with pytest.raises(PackageError, match="tolerance"):
        manifest(tolerance=float("nan"))
    with pytest.raises(PackageError, match="tolerance '1000"):  # JSON's integers have no bound: no OverflowError
        manifest(tolerance=10**400)
    with pytest.raises(PackageError, match="format"):
        Manifest.from_bytes(b'{"format": "something else"}')


@pytest.mark.req("MDL-010")
def test_the_trusted_keys_file_is_strict_and_its_errors_name_the_file_and_line(tmp_path):
    good = trusted_file(tmp_path, (ALICE, ALICE_KEY), ("bob", BOB_KEY))
    assert sorted(load_trusted_keys(good)) == ["alice", "bob"]
    cfg = parse_config({"models": {"trusted_keys": str(good)}})
    assert cfg.trusted_keys == good and cfg.allow_unsigned_models is False
    bad = tmp_path / "bad.keys"
    bad.write_text(f"# operators\n{ALICE} {public_hex(ALICE_KEY)}\nbob not-hex\n")
    with pytest.raises(ConfigError, match=rf"models.trusted_keys: {bad}:3: the key of 'bob' is not 64 hex digits"):
        parse_config({"models": {"trusted_keys": str(bad)}}, "agent.toml")
    with pytest.raises(ConfigError, match="models.trusted_keys: .*no such trusted-keys file"):
        parse_config({"models": {"trusted_keys": str(tmp_path / "missing.keys")}})
    bad.write_text(f"{ALICE} {public_hex(ALICE_KEY)}\n{ALICE} {public_hex(BOB_KEY)}\n")
    with pytest.raises(KeyFileError, match=r":2: operator 'alice' is listed twice"):
        load_trusted_keys(bad)
    keydir = tmp_path / "keys.d"
    keydir.mkdir()
    with pytest.raises(KeyFileError, match=r"no \*\.pub files"):
        load_trusted_keys(keydir)
    (keydir / "alice.pub").write_text(f"{ALICE} {public_hex(ALICE_KEY)}\n")
    assert list(load_trusted_keys(keydir)) == ["alice"]
    with pytest.raises(ConfigError, match="models.allow_unsigned: expected bool"):
        parse_config({"models": {"allow_unsigned": "yes"}})
    with pytest.raises(ConfigError, match=r"\[models\] takes trusted_keys, allow_unsigned"):
        parse_config({"models": {"trusted_key": "x"}})


@pytest.mark.req("MDL-008")
def test_a_delta_rebuilds_the_fine_tuned_model_and_refuses_anything_but_new_values():
    base, tuned = tiny(2.0), tiny(2.5, offset=(0.0, 0.25))
    delta, result = make_delta(base, tuned)
    assert sorted(delta.tensors) == ["offset", "scale"] and delta.base_sha256 == sha256_hex(base)
    assert sha256_hex(result) == delta.result_sha256
    again = Delta.from_bytes(delta.to_bytes())  # through its file, as the board reads it
    assert apply_delta(base, again) == result and again.to_bytes() == delta.to_bytes()  # deterministic bytes
    import onnxruntime as ort

    run = ort.InferenceSession(result, providers=["CPUExecutionProvider"]).run(None, {"x": REF_X})[0]
    np.testing.assert_allclose(run, np.abs(REF_X * 2.5) + [0.0, 0.25], rtol=1e-6)
    with pytest.raises(DeltaError, match="more than initializer values"):
        make_delta(base, tiny(2.0, op="Sqrt"))
    with pytest.raises(DeltaError, match="nothing to send"):
        make_delta(base, tiny(2.0))
    with pytest.raises(DeltaError, match="the delta was made for"):
        apply_delta(tiny(7.0), delta)


def _on_a_full_disk(*args: str, limit_bytes: int = 40):
    """`sunlit-ground model ARGS` in a process that may write no file past ``limit_bytes`` (a disk that fills as
    it writes): what it said."""
    import resource
    import signal
    import subprocess
    import sys

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG, as a full disk's with ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    # No bytecode written under the limit (found in review): a .pyc cut short at 40 bytes in the tree breaks every
    # later import of its module ("marshal data too short")
    return subprocess.run([sys.executable, "-m", "ground", "model", *args], preexec_fn=small_files,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _keygen_on_a_full_disk(out):
    return _on_a_full_disk("keygen", "dave", "--out", str(out))


@pytest.mark.req("MDL-009")
def test_a_package_the_file_system_refuses_is_a_failure_and_the_one_there_before_stays_whole(tmp_path, capsys):
    """Found in audit: a pack on a disk that filled as it wrote exited 2, the code for bad input, and left the files
    it had written (the new model) beside the earlier package's reference set and manifest. Now every file is written
    before any is renamed into place: exit 1 naming the folder, the package there before as it was, no temporary."""
    key, inputs, out = tmp_path / "alice.key", tmp_path / "ref.npy", tmp_path / "pkg"
    assert ground_main(["model", "keygen", "alice", "--out", str(key)]) == 0
    np.save(inputs, REF_X)
    models = {}
    for version, offset in (("1", 0.0), ("2", 0.5)):
        models[version] = tmp_path / f"v{version}.onnx"
        models[version].write_bytes(tiny(2.0, offset=(offset, 0.0)))

    def pack(version: str) -> list[str]:
        return ["pack", str(models[version]), "--name", "tiny", "--version", version, "--key", str(key), "--inputs",
                str(inputs), "--out", str(out)]

    assert ground_main(["model", *pack("1")]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(before) == 3 and len(tiny(2.0)) < 300 < min(len(b) for n, b in before.items() if n != "tiny.onnx")
    full = _on_a_full_disk(*pack("2"), limit_bytes=300)  # the model fits, its reference set does not
    assert full.returncode == 1, full.stderr
    assert f"sunlit-ground model: {out}: the package cannot be written (" in full.stderr, full.stderr
    assert "nothing written" in full.stderr and "Traceback" not in full.stderr, full.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before, "the package there before, whole; no part"
    models["1"].write_bytes(b"x")
    assert ground_main(["model", *pack("2")[:-1], str(models["1"])]) == 2, "--out a file: bad input"
    assert "is not a folder" in capsys.readouterr().err
    (out / "tiny.manifest.json").unlink()  # a folder where the manifest goes: found before anything is written (found
    (out / "tiny.manifest.json").mkdir()   # in review: its rename failed after the model's and reference's were done)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert ground_main(["model", *pack("2")]) == 2
    assert "tiny.manifest.json is a folder" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


@pytest.mark.req("MDL-009")
def test_a_key_file_the_file_system_refuses_is_a_failure_naming_it_and_leaves_nothing(tmp_path, capsys):
    """Found in audit: keygen on a full disk exited 2, the code for bad input, where the input was good and the
    disk refused; in a folder it may not write in, the same, naming its temporary file rather than --out. Both are
    failures (exit 1) naming --out, with no part of a key left; and --force never replaces what is not a file."""
    full = _keygen_on_a_full_disk(tmp_path / "full.key")  # ENOSPC's stand-in: the write refused part-way
    assert full.returncode == 1, full.stderr
    assert f"sunlit-ground model: {tmp_path / 'full.key'}: the key cannot be written (" in full.stderr, full.stderr
    assert "nothing written" in full.stderr and "Traceback" not in full.stderr
    assert list(tmp_path.iterdir()) == [], "no part of it, no temporary"
    for force in ([], ["--force"]):  # sysfs takes no new file, root or not: EACCES
        assert ground_main(["model", "keygen", "erin", "--out", "/sys/erin.key", *force]) == 1, force
        err = capsys.readouterr().err
        assert err.startswith("sunlit-ground model: /sys/erin.key: the key cannot be written ("), err
        assert "nothing written" in err and ".tmp" not in err, err
    assert not os.path.lexists("/sys/erin.key")
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    assert ground_main(["model", "keygen", "erin", "--out", str(pipe), "--force"]) == 2
    assert "is not a file; give --out the key file's name" in capsys.readouterr().err
    assert stat.S_ISFIFO(pipe.lstat().st_mode), "left as it was"


@pytest.mark.req("MDL-009", "MDL-008")
def test_the_ground_tool_keys_packs_deltas_and_verifies_and_the_board_takes_its_packages(tmp_path, capsys):
    key = tmp_path / "alice.key"
    assert ground_main(["model", "keygen", "alice", "--out", str(key)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("alice ") and len(line.split()[1]) == 64
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert ground_main(["model", "keygen", "alice", "--out", str(key)]) == 2  # never overwrites a key by default
    assert "exists already" in capsys.readouterr().err
    assert ground_main(["model", "keygen", "alice", "--out", str(tmp_path), "--force"]) == 2
    assert "is a folder; give --out the key file's name" in capsys.readouterr().err
    spare = tmp_path / "spare.key"
    assert ground_main(["model", "keygen", "bob", "--out", str(spare)]) == 0
    assert ground_main(["model", "keygen", "carol", "--out", str(spare), "--force"]) == 0  # replaced whole, mode 600
    assert stat.S_IMODE(spare.stat().st_mode) == 0o600 and '"carol"' in spare.read_text()
    capsys.readouterr()
    full = _keygen_on_a_full_disk(tmp_path / "full.key")  # found in audit: a cut-off key left under the name
    assert full.returncode == 1 and f"{tmp_path / 'full.key'}: the key cannot be written" in full.stderr, full.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.key", "spare.key"], "no part of it, no temporary"
    keys = tmp_path / "operators.keys"
    keys.write_text(line + "\n")

    v1, v2 = tmp_path / "v1.onnx", tmp_path / "v2.onnx"
    v1.write_bytes(tiny(2.0))
    v2.write_bytes(tiny(2.0, offset=(0.5, 0.0)))
    inputs = tmp_path / "ref.npy"
    np.save(inputs, REF_X)
    board = WorkerBench(tmp_path / "compute", keys)
    try:
        staging = str(board.staging)
        assert ground_main(["model", "pack", str(v1), "--name", "tiny", "--version", "1", "--key", str(key),
                            "--inputs", str(inputs), "--out", staging]) == 0
        command = capsys.readouterr().out.strip().splitlines()[-1]
        assert command == f"MODEL_INSTALL name=tiny version=1 sha256={sha256_hex(tiny(2.0))}"
        assert ground_main(["model", "verify", staging, "--name", "tiny", "--trusted-keys", str(keys)]) == 0
        assert "OK: the board will accept" in capsys.readouterr().out
        assert board.install("1", sha256_hex(tiny(2.0))).ok

        assert ground_main(["model", "delta", str(v1), str(v2), "--name", "tiny", "--version", "2", "--key",
                            str(key), "--inputs", str(inputs), "--out", staging]) == 0
        sha = capsys.readouterr().out.strip().splitlines()[-1].rsplit("=", 1)[1]
        assert ground_main(["model", "verify", staging, "--name", "tiny", "--trusted-keys", str(keys), "--base",
                            str(v1), "--inputs", str(inputs)]) == 0
        capsys.readouterr()
        reply = board.install("2", sha)
        assert reply.ok and reply.result["fallback_version"] == "1"

        # a tampered package fails the ground's check as it would the board's
        ref = board.staging / "tiny.ref.npz"
        ref.write_bytes(ref.read_bytes() + b"\0")
        assert ground_main(["model", "verify", staging, "--name", "tiny", "--trusted-keys", str(keys), "--base",
                            str(v1)]) == 1
        assert "tiny.ref.npz: SHA-256 is not the signed one" in capsys.readouterr().out
        # The files of another name: the board refuses the command's name against the signed one, and
        # verify once said OK (an audit).
        for suffix in (".onnx", ".ref.npz", ".manifest.json"):
            (board.staging / f"tiny{suffix}").rename(board.staging / f"other{suffix}")
        assert ground_main(["model", "verify", staging, "--name", "other", "--trusted-keys", str(keys)]) == 1
        assert "name: the package is 'tiny' (its signed manifest), not 'other'" in capsys.readouterr().out
        # A version MODEL_INSTALL cannot carry is refused before anything is signed (once packed, then refused).
        assert ground_main(["model", "pack", str(v1), "--name", "tiny", "--version", "v" * 33, "--key", str(key),
                            "--inputs", str(inputs), "--out", str(tmp_path / "long")]) == 2
        assert "MODEL_INSTALL could not name this package: version" in capsys.readouterr().err
        assert not (tmp_path / "long").exists()
    finally:
        board.close()

    os.chmod(key, 0o644)
    assert ground_main(["model", "pack", str(v1), "--name", "tiny", "--version", "3", "--key", str(key)]) == 2
    assert "lets others read the private key; chmod 600 it" in capsys.readouterr().err


@pytest.mark.req("MDL-009", "MDL-003")
def test_pack_refuses_reference_inputs_that_do_not_fit_the_model_or_vouch_for_nothing_writing_nothing(
        tmp_path, capsys, monkeypatch):
    """Found in audit: inputs with no samples, or all NaN, were packed (exit 0, the MODEL_INSTALL line printed) into a
    package verify and the board refuse, found only once uplinked; and inputs of another rank or type (the shipped
    model's tiles by default) said only onnxruntime's "Invalid rank for input: x Got: 4 Expected: 2". And verify
    said OK to a version of the shipped model whose inputs its jobs could not feed, which the board refuses."""
    key, model, out = tmp_path / "alice.key", tmp_path / "tiny.onnx", tmp_path / "pkg"
    assert ground_main(["model", "keygen", "alice", "--out", str(key)]) == 0
    (tmp_path / "trusted.keys").write_text(capsys.readouterr().out)
    model.write_bytes(tiny(2.0))
    pack = ["model", "pack", str(model), "--name", "tiny", "--version", "1", "--key", str(key), "--out", str(out)]
    for name, x in (("empty", REF_X[:0]), ("nan", np.full_like(REF_X, np.nan))):
        np.save(tmp_path / f"{name}.npy", x)
        capsys.readouterr()
        assert ground_main([*pack, "--inputs", str(tmp_path / f"{name}.npy")]) == 2, name
        err = capsys.readouterr().err
        assert "--inputs: the reference has no finite expected value" in err and "vouches for nothing" in err, err
        assert not out.exists(), name
    np.save(tmp_path / "ints.npy", REF_X.astype(np.int64))
    ints = ["--inputs", str(tmp_path / "ints.npy")]
    for inputs, says in ((ints, "(int64 [8, 2];"), ([], "(float32 [16, 4, 16, 16];")):  # [] : the shipped tiles
        assert ground_main([*pack, *inputs]) == 2
        err = capsys.readouterr().err
        assert says in err and "do not fit the model's input x tensor(float) ['N', 2]" in err, err
        assert "the shipped model's held-out tiles" in err and "give --inputs" in err, err
        assert not out.exists()
    np.save(tmp_path / "good.npy", REF_X)
    assert ground_main([*pack, "--inputs", str(tmp_path / "good.npy")]) == 0 and len(list(out.iterdir())) == 3
    # a version of the shipped model whose jobs could not use it: pack refuses it unwritten, as the board would
    # (MDL-004; found in review: packed, exit 0), and verify says so of one packed elsewhere
    shipped = [*pack[:4], "cloud_screen", *pack[5:-1], str(tmp_path / "cs"), "--inputs", str(tmp_path / "good.npy")]
    capsys.readouterr()
    assert ground_main(shipped) == 2 and not (tmp_path / "cs").exists()
    said = capsys.readouterr().err
    assert "'cloud_screen' v1 takes x [N, 2] tensor(float); the shipped model: tiles [N, 4, 16, 16]" in said, said
    from ground import model_package

    monkeypatch.setattr(model_package, "same_use_as_shipped", lambda *args: None)  # as another tool would pack it
    assert ground_main(shipped) == 0
    monkeypatch.undo()
    capsys.readouterr()
    assert ground_main(["model", "verify", str(tmp_path / "cs"), "--name", "cloud_screen", "--trusted-keys",
                        str(tmp_path / "trusted.keys")]) == 1
    said = capsys.readouterr().out
    assert "FAILED: 'cloud_screen' v1 takes x [N, 2] tensor(float); the shipped model: tiles [N, 4, 16, 16]" in said \
        and "its jobs could not use it" in said, said


@pytest.mark.req("MDL-009", "MDL-002")
def test_pack_refuses_a_model_over_the_boards_limit_or_no_regular_file_unread(tmp_path, capsys):
    """Found in audit: a 2.2 GB file was read whole (4.6 GB of memory, 14 s) and refused as "RuntimeError:
    narrowing_error", naming neither the size nor the limit; a FIFO given as the model was waited on for ever."""
    from flight.compute.uplink import MAX_MODEL_BYTES

    key = tmp_path / "alice.key"
    assert ground_main(["model", "keygen", "alice", "--out", str(key)]) == 0
    huge, fifo = tmp_path / "huge.onnx", tmp_path / "fifo.onnx"
    with open(huge, "wb") as f:
        f.truncate(MAX_MODEL_BYTES + 1)  # sparse: no disk, and nothing of it is read
    os.mkfifo(fifo)
    for model, says in ((huge, f"{MAX_MODEL_BYTES + 1} bytes, over the limit of {MAX_MODEL_BYTES} bytes; nothing of "
                                "it was read (MAX_MODEL_BYTES"),
                        (fifo, "not a regular file")):
        capsys.readouterr()
        assert ground_main(["model", "pack", str(model), "--name", "tiny", "--version", "1", "--key", str(key),
                            "--out", str(tmp_path / "pkg")]) == 2
        err = capsys.readouterr().err
        assert f"sunlit-ground model: {model}: {says}" in err, err
        assert not (tmp_path / "pkg").exists()


@pytest.mark.req("MDL-003")
def test_a_reference_that_vouches_for_nothing_refuses_the_model():
    """Found in audit: a reference set with no samples, or whose expected outputs were all NaN, gave a max error of 0,
    and a model wrong on every input was verified on the ground and activated on board."""
    from flight.compute.package import compare_outputs

    good = {"p": np.array([[0.2, 0.8]], np.float32)}
    assert compare_outputs(good, good, 1e-5).ok
    for expected in ({"p": np.zeros((0, 2), np.float32)}, {"p": np.full((1, 2), np.nan, np.float32)},
                     {"p": np.full((1, 2), np.inf, np.float32)}):
        result = compare_outputs({"p": np.full(expected["p"].shape, 0.5, np.float32)}, expected, 1e-5)
        assert not result.ok and "it vouches for nothing" in result.describe()
    # One output with nothing finite (an empty list, log-probabilities all -inf) is fine where another vouches
    mixed = {"p": np.array([[0.2, 0.8]], np.float32), "logp": np.full((1, 2), -np.inf, np.float32),
             "boxes": np.zeros((0, 4), np.float32)}
    assert compare_outputs(mixed, mixed, 1e-5).ok


def _small_order_encodings() -> set[bytes]:
    """Every 32-byte string an Ed25519 decoder may read as a point of small order, derived here from the curve
    (not copied from the list under test): the 8-torsion's points, each as encoded, with the sign bit set where
    x = 0, and with y + p where that still fits in 255 bits."""
    p = 2**255 - 19
    d = -121665 * pow(121666, -1, p) % p
    order = 2**252 + 27742317777372353535851937790883648493  # of the base point

    def add(a, b):
        (x1, y1), (x2, y2) = a, b
        t = d * x1 * x2 * y1 * y2 % p
        return (x1 * y2 + x2 * y1) * pow(1 + t, -1, p) % p, (y1 * y2 + x1 * x2) * pow(1 - t, -1, p) % p

    def times(n, a):
        out = (0, 1)
        while n:
            out, a, n = (add(out, a) if n & 1 else out), add(a, a), n >> 1
        return out

    def x_of(y):
        xx = (y * y - 1) * pow(d * y * y + 1, -1, p) % p
        x = pow(xx, (p + 3) // 8, p)
        x = x if (x * x - xx) % p == 0 else x * pow(2, (p - 1) // 4, p) % p
        return x if (x * x - xx) % p == 0 else None

    y = 2
    while True:  # a point whose order has the factor 8: times the prime order, it gives a generator of the 8-torsion
        x = x_of(y)
        torsion = times(order, (x, y)) if x is not None else (0, 1)
        if times(4, torsion) != (0, 1):
            break
        y += 1
    found = set()
    for x, y in {times(k, torsion) for k in range(8)}:
        found.add((y | (x & 1) << 255).to_bytes(32, "little"))
        found |= {(y | 1 << 255).to_bytes(32, "little")} if x == 0 else set()
        found |= {(y + p | s << 255).to_bytes(32, "little") for s in (0, 1)} if y + p < 2**255 else set()
    return found


@pytest.mark.req("MDL-001", "MDL-010")
def test_a_trusted_key_that_is_no_point_of_the_curve_is_refused_naming_the_file_and_line(tmp_path):
    """Found in review: cryptography loads any 32 bytes as an Ed25519 public key, so a mistyped key was taken and
    every signature then failed against it, at the first install. The check agrees with Euler's criterion (a
    square root of (y^2 - 1) / (d y^2 + 1) exists), worked out here another way than the RFC's."""
    import random

    from flight.compute.package import on_curve

    p = 2**255 - 19
    d = -121665 * pow(121666, -1, p) % p

    def is_point(key: bytes) -> bool:
        y = int.from_bytes(key, "little") & ((1 << 255) - 1)
        if y >= p:
            return False
        xx = (y * y - 1) * pow(d * y * y + 1, -1, p) % p
        return (xx == 0 and not key[31] >> 7) or (xx != 0 and pow(xx, (p - 1) // 2, p) == 1)

    rng = random.Random(8032)
    keys = [rng.randbytes(32) for _ in range(400)] + [(p - 1 + k).to_bytes(32, "little") for k in range(3)]
    assert [on_curve(k) for k in keys] == [is_point(k) for k in keys]
    assert 150 < sum(map(is_point, keys)) < 250  # about half of all 32-byte strings are points
    assert on_curve(bytes.fromhex(public_hex(ALICE_KEY)))
    off = next(k for k in keys if not is_point(k))
    path = tmp_path / "operators.keys"
    path.write_text(f"{ALICE} {public_hex(ALICE_KEY)}\nmallory {off.hex()}\n")
    with pytest.raises(KeyFileError, match=rf"^{path}:2: the key of 'mallory' is no Ed25519 public key"):
        load_trusted_keys(path)
    with pytest.raises(ConfigError, match=rf"models.trusted_keys: {path}:2: the key of 'mallory' is no Ed25519"):
        parse_config({"models": {"trusted_keys": str(path)}}, "agent.toml")


@pytest.mark.req("MDL-001", "MDL-010")
def test_a_trusted_key_of_small_order_is_refused_where_the_keys_are_read_naming_the_file_and_line(tmp_path, capsys):
    """Found in audit: a trusted key of small order (the identity point, 01 00..00, among them) was taken, and
    against it a signature R = the identity, S = 0 verified for any manifest: anyone could install a model."""
    assert SMALL_ORDER_KEYS == _small_order_encodings() and len(SMALL_ORDER_KEYS) == 14
    keys = tmp_path / "operators.keys"
    for key in sorted(SMALL_ORDER_KEYS):
        keys.write_text(f"{ALICE} {public_hex(ALICE_KEY)}\nmallory {key.hex()}\n")
        with pytest.raises(KeyFileError, match=rf"^{keys}:2: the key of 'mallory' is a point of small order"):
            load_trusted_keys(keys)
        with pytest.raises(ConfigError, match=rf"models.trusted_keys: {keys}:2: the key of 'mallory' is a point"):
            parse_config({"models": {"trusted_keys": str(keys)}}, "agent.toml")
    # On board, the keys are read at each install: the forged package is refused, said, and nothing installed.
    keys.write_text(f"{ALICE} {public_hex(ALICE_KEY)}\nmallory {'01' + '00' * 31}\n")
    board = WorkerBench(tmp_path / "compute", keys)
    try:
        manifest = stage_by_hand(board.staging, "tiny", "1", tiny(9.0), tiny(9.0))
        forged = replace(manifest, uplinked_by="mallory", signature="01" + "00" * 63)  # R = identity, S = 0
        (board.staging / "tiny.manifest.json").write_bytes(forged.to_bytes())
        reply = board.install("1", manifest.sha256)
        assert not reply.ok and reply.code == FailureCode.EXECUTION_ERROR
        assert f"trusted keys ([models] trusted_keys): {keys}:2: the key of 'mallory' is a point of small order" \
            in reply.reason
        assert "point of small order" in board.events("MODEL_REFUSED")[-1].args["reason"]
        assert board.worker.store.list() == []
    finally:
        board.close()
    # The ground's verify reads them the same way.
    assert ground_main(["model", "verify", str(board.staging), "--name", "tiny", "--trusted-keys", str(keys)]) == 2
    assert f"{keys}:2: the key of 'mallory' is a point of small order" in capsys.readouterr().err


@pytest.mark.req("MDL-002", "MDL-009")
def test_the_ground_refuses_a_model_with_external_weights_naming_the_tensor_and_its_file(tmp_path, capsys):
    """Found in audit: `sunlit-ground model pack` of a model whose weights lay in an external file ended in
    onnxruntime's own error, naming neither the tensor nor the file; the board refuses such a model too."""
    model = tmp_path / "model" / "tiny.onnx"
    data = with_external_weights(tiny(2.0), model.parent, model.name)
    key = tmp_path / "alice.key"
    assert ground_main(["model", "keygen", ALICE, "--out", str(key)]) == 0
    inputs = tmp_path / "ref.npy"
    np.save(inputs, REF_X)
    capsys.readouterr()
    out = tmp_path / "package"
    assert ground_main(["model", "pack", str(model), "--name", "tiny", "--version", "1", "--key", str(key),
                        "--inputs", str(inputs), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"sunlit-ground model: {model}: tensor 'scale' keeps its data in the external file 'tiny.weights'" in err
    assert "Traceback" not in err and not out.exists()
    tuned = tmp_path / "tuned.onnx"
    tuned.write_bytes(tiny(2.5))
    assert ground_main(["model", "delta", str(model), str(tuned), "--name", "tiny", "--version", "2", "--key",
                        str(key), "--inputs", str(inputs), "--out", str(out)]) == 2
    assert f"{model}: tensor 'scale' keeps its data in the external file 'tiny.weights'" in capsys.readouterr().err
    for base, tuned, what in ((data, tiny(2.5), "base model"), (tiny(2.0), data, "fine-tuned model")):
        with pytest.raises(PackageError, match=f"^{what}: tensor 'scale' keeps its data in the external file"):
            pack_delta(base, tuned, "tiny", "2", ALICE, ALICE_KEY, out, REF_X)
    with pytest.raises(PackageError, match="^model: tensor 'scale' keeps its data in the external file"):
        pack_full(data, "tiny", "1", ALICE, ALICE_KEY, out, REF_X)
    # A package made some other way: verify says what the board will (the tensor and its file), not onnxruntime.
    stage_by_hand(out, "tiny", "1", data, tiny(2.0))
    with pytest.raises(PackageError, match="^tiny.onnx: tensor 'scale' keeps its data in the external file"):
        verify_package(out, "tiny", {ALICE: bytes.fromhex(public_hex(ALICE_KEY))})


@pytest.mark.req("MDL-009", "MDL-002", "MDL-008")
def test_verify_refuses_what_the_board_refuses_a_version_no_command_carries_another_size_or_delta_base(tmp_path):
    """Found in audit: verify said "OK: the board will accept this package" to a package signed (by another tool, or
    an older ground) with a version MODEL_INSTALL cannot carry, to one whose signed size_bytes is not its model's, and
    to a delta whose file names another base than its signed manifest: the board refuses each (checked here on the
    board's own code)."""
    from flight.compute.store import ModelStore
    from flight.compute.uplink import Refusal, UplinkChecks
    from tests.model_helpers import resign

    trusted = trusted_file(tmp_path, (ALICE, ALICE_KEY))
    keys = load_trusted_keys(trusted)
    staging = tmp_path / "staging"
    board = UplinkChecks(ModelStore(tmp_path / "store"), staging, trusted, allow_unsigned=False)
    pack_full(tiny(2.0), "tiny", "1", ALICE, ALICE_KEY, staging, REF_X, 1e-5)
    assert verify_package(staging, "tiny", keys)[-1].startswith("reference: 8 inputs")
    for changes, says in (({"version": "v" * 40}, "MODEL_INSTALL could not name this package: version is 40"),
                          ({"size_bytes": len(tiny(2.0)) + 1}, f"tiny.onnx: {len(tiny(2.0))} bytes, not the "
                                                               f"{len(tiny(2.0)) + 1} expected")):
        pack_full(tiny(2.0), "tiny", "1", ALICE, ALICE_KEY, staging, REF_X, 1e-5)
        signed = resign(staging, "tiny", **changes)
        with pytest.raises(PackageError, match=says):
            verify_package(staging, "tiny", keys)
        if "size_bytes" in changes:  # a version of 40 characters: no MODEL_INSTALL reaches the board with it
            with pytest.raises(Refusal, match="not the .* expected"):
                board.candidate("tiny", signed.version, signed.sha256)
    (staging / "tiny.onnx").unlink()
    pack_delta(tiny(2.0), tiny(2.5), "tiny", "2", ALICE, ALICE_KEY, staging, REF_X, 1e-5, with_inputs=True)
    assert verify_package(staging, "tiny", keys, base=tiny(2.0))[-1].startswith("reference: 8 inputs")
    signed = resign(staging, "tiny", base_sha256="c" * 64)
    with pytest.raises(PackageError, match="tiny.delta.npz: it names another base or result than its signed"):
        verify_package(staging, "tiny", keys, base=tiny(2.0))
    with pytest.raises(Refusal, match="names another base or result than its signed manifest"):
        board.candidate("tiny", "2", signed.sha256)


@pytest.mark.req("MDL-009")
def test_a_key_inputs_or_base_that_is_no_regular_key_file_is_refused_unread_naming_it(tmp_path, capsys):
    """Found in audit: `--key /dev/zero` was read until the memory ran out and said as "cannot use that model:
    MemoryError", a key file that is not text as "cannot use that model: UnicodeDecodeError", and a FIFO given as
    the key, the reference inputs or verify's --base was waited on for ever."""
    key, model, fifo = tmp_path / "alice.key", tmp_path / "tiny.onnx", tmp_path / "fifo"
    assert ground_main(["model", "keygen", ALICE, "--out", str(key)]) == 0
    (tmp_path / "trusted.keys").write_text(capsys.readouterr().out)
    model.write_bytes(tiny(2.0))
    np.save(tmp_path / "ref.npy", REF_X)
    os.mkfifo(fifo, 0o600)
    binary, big = tmp_path / "binary.key", tmp_path / "big.key"
    binary.write_bytes(b"\xff\xfe\x00 not text")
    big.write_bytes(b" " * 5000)
    for path in (binary, big):
        os.chmod(path, 0o600)
    pack = ["model", "pack", str(model), "--name", "tiny", "--version", "1", "--out", str(tmp_path / "pkg")]
    for given, says in ((["--key", str(binary)], f"{binary}: not a sunlit-operator-key/1 key file (not text)"),
                        (["--key", str(big)], f"{big}: cannot read the key file: 5000 bytes, over the limit"),
                        (["--key", "/dev/zero"], "/dev/zero: cannot read the key file: not a regular file"),
                        (["--key", str(fifo)], f"{fifo}: cannot read the key file: not a regular file"),
                        (["--key", str(key), "--inputs", str(fifo)], f"{fifo}: no reference inputs (not a regular")):
        assert ground_main([*pack, *given]) == 2, given
        err = capsys.readouterr().err
        assert err.startswith(f"sunlit-ground model: {says}") and err.count("\n") == 1, err
        assert not (tmp_path / "pkg").exists()
    assert ground_main([*pack, "--key", str(key), "--inputs", str(tmp_path / "ref.npy")]) == 0
    capsys.readouterr()
    assert ground_main(["model", "verify", str(tmp_path / "pkg"), "--name", "tiny", "--trusted-keys",
                        str(tmp_path / "trusted.keys"), "--base", str(fifo)]) == 2
    assert f"sunlit-ground model: {fifo}: not a regular file" in capsys.readouterr().err


@pytest.mark.req("MDL-009", "MDL-002")
def test_pack_refuses_a_reference_set_over_the_boards_limit_writing_nothing(tmp_path, capsys, monkeypatch):
    """Found in audit: 20 million reference inputs were packed into a 282 MB NAME.ref.npz, exit 0 and the
    MODEL_INSTALL line printed, which the board refuses unread (over MAX_REFERENCE_BYTES). The limit is lowered here
    to the size of this package's reference set, so that twice its inputs go past it."""
    from flight.compute import uplink

    key, model = tmp_path / "alice.key", tmp_path / "tiny.onnx"
    assert ground_main(["model", "keygen", ALICE, "--out", str(key)]) == 0
    model.write_bytes(tiny(2.0))
    np.save(tmp_path / "ref.npy", REF_X)
    np.save(tmp_path / "more.npy", np.concatenate([REF_X, REF_X]))
    fits = pack_full(tiny(2.0), "tiny", "1", ALICE, ALICE_KEY, tmp_path / "fits", REF_X).files["tiny.ref.npz"]
    monkeypatch.setattr(uplink, "MAX_REFERENCE_BYTES", fits)
    capsys.readouterr()
    for command in (["pack", str(model)], ["delta", str(model), str(tmp_path / "tuned.onnx"), "--with-inputs"]):
        (tmp_path / "tuned.onnx").write_bytes(tiny(2.5))
        assert ground_main(["model", *command, "--name", "tiny", "--version", "2", "--key", str(key), "--inputs",
                            str(tmp_path / "more.npy"), "--out", str(tmp_path / "pkg")]) == 2, command
        err = capsys.readouterr().err
        assert err.startswith("sunlit-ground model: --inputs: the reference set is ") and \
            f"over the board's limit of {fits} (MAX_REFERENCE_BYTES)" in err, err
        assert not (tmp_path / "pkg").exists()
    assert ground_main(["model", "pack", str(model), "--name", "tiny", "--version", "2", "--key", str(key), "--inputs",
                        str(tmp_path / "ref.npy"), "--out", str(tmp_path / "pkg")]) == 0


def test_a_trusted_keys_fifo_is_refused_not_waited_on(tmp_path):
    """MDL-010: a FIFO named as the trusted-keys file (nobody writing) would hang the agent's start;
    it is refused naming the key and the file."""
    fifo = tmp_path / "trusted.keys"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=rf"models.trusted_keys: {fifo}: cannot read it: not a regular file"):
        parse_config({"models": {"trusted_keys": str(fifo)}})
