"""Audit of the ground's model-package tool (ground/model_cli.py, ground/model_package.py): what it prints from a
signed manifest, output it cannot write, and reference inputs in a damaged file."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from ground.cli import main as ground_main
from ground.model_package import pack_full
from tests.model_helpers import ALICE, ALICE_KEY, REF_X, tiny, trusted_file

FORGED = "2026-11-18\x1b[2J\nOK: forged"  # a created_utc that clears the screen and forges a line


@pytest.fixture()
def package(tmp_path):
    """A full package of tiny signed by alice, its created_utc FORGED (only a trusted signer could put it there),
    and the trusted-keys file that trusts her."""
    pack_full(tiny(2.0), "tiny", "1", ALICE, ALICE_KEY, tmp_path / "staging", REF_X, 1e-5, created_utc=FORGED)
    return tmp_path / "staging", trusted_file(tmp_path, (ALICE, ALICE_KEY))


@pytest.mark.req("MDL-009")
def test_verify_prints_a_signed_manifests_text_escaped(package, capsys):
    """A control character in a manifest field verify prints (created_utc) reaches no terminal as one: no escape
    sequence, no forged "OK" line; a FAILED message escapes what it quotes too."""
    staging, keys = package
    assert ground_main(["model", "verify", str(staging), "--name", "tiny", "--trusted-keys", str(keys)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "made 2026-11-18\\x1b[2J\\nOK: forged)" in out, out
    assert [line for line in out.splitlines() if line.startswith("OK")] == \
        ["OK: the board will accept this package (given its base, for a delta)"]
    assert ground_main(["model", "verify", str(staging), "--name", "t\x1b[31m", "--trusted-keys", str(keys)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED: ") and "\x1b" not in out and "t\\x1b[31m.manifest.json" in out, out


@pytest.mark.req("MDL-009")
def test_verify_whose_output_cannot_be_written_is_a_failure_said_as_the_outputs(package, capsys, monkeypatch):
    """`model verify > /dev/full`: exit 1 (it failed), said as the output's; found in audit: "sunlit-ground model:
    : No space left on device" and exit 2, the code for bad input."""
    staging, keys = package
    with open("/dev/full", "w", buffering=1) as full:  # each line written as printed: ENOSPC at the first
        monkeypatch.setattr(sys, "stdout", full)
        code = ground_main(["model", "verify", str(staging), "--name", "tiny", "--trusted-keys", str(keys)])
        monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 1, err
    assert err == "sunlit-ground model: No space left on device (writing its output)\n", err


@pytest.mark.req("MDL-009")
def test_reference_inputs_in_a_damaged_npz_are_refused_naming_the_file(tmp_path, capsys):
    """A cut-off or damaged --inputs .npz is bad input naming the file, nothing written; found in audit:
    "cannot use that model: BadZipFile", blaming the model and naming no file."""
    key, model = tmp_path / "alice.key", tmp_path / "tiny.onnx"
    assert ground_main(["model", "keygen", ALICE, "--out", str(key)]) == 0
    model.write_bytes(tiny(2.0))
    np.savez(tmp_path / "x.npz", x=REF_X)
    whole = (tmp_path / "x.npz").read_bytes()
    damaged = bytearray(whole)
    damaged[len(whole) // 3] ^= 0xFF  # inside x.npy's bytes: a bad CRC
    for name, data in (("cut.npz", whole[:50]), ("crc.npz", bytes(damaged))):
        (tmp_path / name).write_bytes(data)
        capsys.readouterr()
        out = tmp_path / f"out-{name}"
        assert ground_main(["model", "pack", str(model), "--name", "tiny", "--version", "1", "--key", str(key),
                            "--inputs", str(tmp_path / name), "--out", str(out)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(f"sunlit-ground model: {tmp_path / name}: no reference inputs (BadZipFile: "), err
        assert not out.exists()
