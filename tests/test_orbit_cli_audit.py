"""Found in audit: ``sunlit-flight`` and its configuration loading (flight/cli.py, flight/config.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flight.cli import main
from flight.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
MAX_CONFIG_BYTES = 1024 * 1024  # flight.config.MAX_CONFIG_BYTES


def flight(*args, stdout=subprocess.PIPE, timeout=30):
    return subprocess.run([sys.executable, "-m", "flight", *args], stdout=stdout, stderr=subprocess.PIPE, text=True,
                          cwd=ROOT, timeout=timeout)


def test_a_config_that_is_a_device_is_refused_not_read_without_end(capsys):
    """AGT-018: ``--config /dev/zero`` read without end to a MemoryError traceback; now one line, exit 2."""
    with pytest.raises(ConfigError, match=r"/dev/zero: not a file \(a device or a socket\)"):
        load_config("/dev/zero")
    assert main(["run", "--config", "/dev/zero"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/dev/zero: not a file" in err and "Traceback" not in err


def test_a_config_past_its_bound_is_refused(tmp_path):
    """AGT-018: the file is read to its bound, no further, and refused past it naming the file."""
    path = tmp_path / "agent.toml"
    path.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match=r"agent\.toml: over 1024 KiB"):
        load_config(path)
    path.write_bytes(b"#" * (MAX_CONFIG_BYTES - 40) + b'\n[rates]\nhk_period_s = 2.0\n')  # at the bound: read
    assert load_config(path).hk_period_s == 2.0


def test_a_named_pipe_no_one_writes_is_said_so_not_waited_on_for_good(tmp_path):
    """AGT-018: the agent's start hung for good on a FIFO (its open waits for a writer); a subprocess, so that
    the old behaviour fails the test by its timeout rather than hanging the suite."""
    fifo = tmp_path / "agent.toml"
    os.mkfifo(fifo)
    res = flight("run", "--config", str(fifo), "--state-dir", str(tmp_path / "state"))
    assert res.returncode == 2 and "agent.toml: a pipe that gave nothing (no process writes to it yet" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "state").exists()


def test_a_config_from_a_pipe_is_still_read():
    """``--config <(...)``: a pipe with its writer is read as a file is."""
    r, w = os.pipe()
    os.write(w, b'[rates]\nhk_period_s = 3.0\n')
    os.close(w)
    try:
        assert load_config(f"/dev/fd/{r}").hk_period_s == 3.0
    finally:
        os.close(r)


@pytest.mark.parametrize("key", ["paths.state_dir", "hal.root"])
def test_an_empty_directory_in_the_config_is_refused(tmp_path, key):
    """AGT-018: ``state_dir = ""`` was the working directory, said as "state in .": refused naming the key."""
    section, name = key.split(".")
    path = tmp_path / "agent.toml"
    path.write_text(f'[{section}]\n{name} = ""\n')
    with pytest.raises(ConfigError, match=rf"agent\.toml: {key}: empty or blank: give a directory"):
        load_config(path)


@pytest.mark.parametrize("key", ["hal.root", "hal.nvpmodel", "paths.state_dir", "link.url"])
def test_a_nul_byte_in_a_config_string_is_refused_naming_the_key(tmp_path, key):
    """AGT-018: TOML's \\u0000 in [hal] root gave "embedded null byte" naming no key, and in [hal] nvpmodel a
    ValueError from every tick's power-mode query; refused as the file is read, naming the key."""
    section, name = key.split(".")
    path = tmp_path / "agent.toml"
    path.write_text(f'[{section}]\n{name} = "ab\\u0000c"\n')
    with pytest.raises(ConfigError, match=rf"agent\.toml: {key}: 'ab\\x00c' holds a NUL byte"):
        load_config(path)


def test_an_empty_state_dir_flag_is_refused_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    """AGT-018: ``--state-dir "$STATE"`` with the variable unset started the agent with its state, store and
    compute area in the directory it was started from; now exit 2 naming the flag and the key."""
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--state-dir", "", "--link", "zmq://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "--state-dir (paths.state_dir): empty or blank: give a directory" in err
    assert list(tmp_path.iterdir()) == []


def test_output_that_cannot_be_written_is_one_line_not_a_traceback():
    """`sunlit-flight dictionary --markdown > docs/dictionary.md` on a full disk ended in an OSError traceback;
    now one line naming the cause, exit status 1."""
    for args in (["dictionary", "--markdown"], ["packet", "encode", "PING"]):
        with open("/dev/full", "w") as full:
            res = flight(*args, stdout=full)
        assert res.returncode == 1, res.stderr
        assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1
        assert "No space left on device (writing its output)" in res.stderr
