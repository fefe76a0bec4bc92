"""Audit of the ground's smaller tools and their inputs: the server's configuration file (ground/server_config.py),
the schedule file (ground/schedule_file.py), broken or hostile, read with real files, pipes and key files, and the
outputs the CLI writes (ground/cli_args.py)."""

from __future__ import annotations

import os

import pytest

from flight.link.curve import make_certificate
from flight.link.definitions import DICTIONARY
from ground.cli import main as ground_main
from ground.cli_args import install_output, temp_beside
from ground.schedule_file import ScheduleFileError, parse_schedule
from ground.server_config import MAX_CONFIG_BYTES, ServerConfigError, load_server_config
from tests.samples import sample_tc_keys

CRAFT = '[[spacecraft]]\nid = "sunlit-1"\nlink = "zmq://127.0.0.1:5550"\n'
NOW_UNIX_S = 1_800_000_000.0


@pytest.mark.req("GND-025")
@pytest.mark.timeout(30)  # the old reader waited for a writer for good: this fails it rather than hang the suite
def test_a_server_config_that_is_a_pipe_no_one_writes_or_too_long_is_refused_not_waited_on(tmp_path, capsys):
    """A named pipe with no writer hung the server's start for good (its open waits for one), and a file without
    end (``/dev/zero``) was read until memory ran out: each is now one line naming the file, exit 2."""
    fifo = tmp_path / "ground.toml"
    os.mkfifo(fifo)
    assert ground_main(["server", "--config", str(fifo)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ground.toml: a pipe that gave nothing" in err and "Traceback" not in err, err
    with pytest.raises(ServerConfigError, match=r"/dev/zero: not a file"):
        load_server_config("/dev/zero", DICTIONARY)
    long = tmp_path / "long.toml"
    long.write_bytes(CRAFT.encode() + b"#" * MAX_CONFIG_BYTES)
    with pytest.raises(ServerConfigError, match=r"long\.toml: over 1024 KiB"):
        load_server_config(long, DICTIONARY)
    long.write_bytes(b"\xff" + CRAFT.encode())
    with pytest.raises(ServerConfigError, match=r"long\.toml: not UTF-8 text \(byte 0\)"):
        load_server_config(long, DICTIONARY)
    r, w = os.pipe()  # `--config <(...)`: a pipe with its writer is read as a file is
    os.write(w, CRAFT.encode())
    os.close(w)
    try:
        assert load_server_config(f"/dev/fd/{r}", DICTIONARY).spacecraft_ids() == ["sunlit-1"]
    finally:
        os.close(r)


@pytest.mark.req("GND-025")
def test_a_tc_keys_path_with_a_nul_or_empty_is_refused_naming_the_key(tmp_path, capsys):
    """``tc_keys = "a\\u0000b"`` ended the server's start in a ValueError traceback; ``""`` read the folder."""
    config = tmp_path / "ground.toml"
    for value, shown in (('"a\\u0000b"', r"'a\x00b'"), ('""', "''")):
        config.write_text(f"{CRAFT}tc_keys = {value}\n")
        with pytest.raises(ServerConfigError, match=r"spacecraft\[0\]\.tc_keys: .* must be the path of a key file"):
            load_server_config(config, DICTIONARY)
        assert ground_main(["server", "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert err == f"sunlit-ground server: {config}: spacecraft[0].tc_keys: {shown} must be the path of a key " \
                      "file\n", err


@pytest.mark.req("GND-025")
def test_a_bad_retention_table_is_refused_with_the_config_before_the_archive_is_made(tmp_path, capsys):
    """A retention rule the archive refuses was accepted with the file and refused only as the server started,
    its archive (and lock) made first and the message naming no file; now it is the config's error."""
    config = tmp_path / "ground.toml"
    for table, said in (("AGENT_HK = { max_age_days = \"x\" }", "retention.AGENT_HK.max_age_days 'x'"),
                        ("NOPE = { max_age_days = 3 }", "retention.NOPE: unknown kind"),
                        ("hk = { max_mb = nan }", "retention.hk.max_mb nan")):
        config.write_text(f'[server]\nport = 0\narchive = "var/ground.sqlite"\n{CRAFT}'
                          f"[retention]\n{table}\n")
        with pytest.raises(ServerConfigError, match=r"ground\.toml: " + said.replace(".", r"\.")):
            load_server_config(config, DICTIONARY)
        assert ground_main(["server", "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"sunlit-ground server: {config}: {said}") and err.count("\n") == 1, err
        assert not (tmp_path / "var").exists(), "nothing made for a config refused"
    config.write_text(f"{CRAFT}[retention]\nAGENT_HK = {{ max_age_days = 30, max_mb = 512 }}\n")
    assert load_server_config(config, DICTIONARY).retention == {"AGENT_HK": {"max_age_days": 30, "max_mb": 512}}


@pytest.mark.req("GND-025")
def test_relative_key_files_are_taken_from_the_configs_folder_as_its_other_paths_are(tmp_path, monkeypatch):
    """``tc_keys = "keys/tc.keys"`` and the CurveZMQ certificates were looked for from wherever the server was
    started (another file, or none), while ``archive`` and ``users`` beside them come from the file's folder."""
    keys = tmp_path / "etc" / "keys"
    keys.mkdir(parents=True)
    sample_tc_keys(keys)
    make_certificate(keys, "agent")
    make_certificate(keys, "ground")
    config = tmp_path / "etc" / "ground.toml"
    config.write_text(f'{CRAFT}tc_keys = "keys/tc.keys"\nzmq_server_public = "keys/agent.key"\n'
                      'zmq_client_secret = "keys/ground.key_secret"\n')
    elsewhere = tmp_path / "run"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    sc = load_server_config(config, DICTIONARY).spacecraft[0]
    assert (sc.tc_keys, sc.zmq_server_public, sc.zmq_client_secret) == \
        (str(keys / "tc.keys"), str(keys / "agent.key"), str(keys / "ground.key_secret"))
    assert sc.link_curve() is not None
    (keys / "tc.keys").unlink()
    with pytest.raises(ServerConfigError, match=r"spacecraft\[0\]\.tc_keys: .*etc/keys/tc\.keys"):
        load_server_config(config, DICTIONARY)


@pytest.mark.req("AGT-080")
def test_an_entry_given_twice_in_a_schedule_file_is_refused_before_anything_goes_up():
    """The same command at the same time with the same arguments, twice (an entry pasted twice), went up as two
    time tags, to run twice on board; now refused naming both entries. The same command at another time, or with
    other arguments, is still taken."""
    entry = '[[entry]]\n{when}\ncommand = "SET_MODE"\nargs = {{ mode = "{mode}" }}\n'
    for when in (f"at_unix_s = {NOW_UNIX_S + 100}", 'at = "2027-01-15T08:01:40Z"', "after_s = 100"):
        text = entry.format(when=when, mode="IDLE") + entry.format(when=when, mode="SAFE") + \
            entry.format(when=when, mode="IDLE")
        with pytest.raises(ScheduleFileError, match=r"^sched: entry\[2\]: the same SET_MODE at the same time as "
                                                    r"entry\[0\]: it would run twice"):
            parse_schedule(text, NOW_UNIX_S, "sched")
        tags = parse_schedule(text.rsplit("[[entry]]", 1)[0], NOW_UNIX_S, "sched")
        assert [t.args["mode"] for t in tags] == ["IDLE", "SAFE"]
    text = entry.format(when="after_s = 100", mode="IDLE") + entry.format(when="after_s = 101", mode="IDLE") + \
        entry.format(when=f"at_unix_s = {NOW_UNIX_S + 100}", mode="IDLE")
    assert len(parse_schedule(text, NOW_UNIX_S, "sched")) == 3


@pytest.mark.req("GND-025")
def test_an_output_with_a_long_legal_name_is_written_in_place_whole(tmp_path):
    """An output named with 241 to 255 bytes (legal) was refused "File name too long": its temporary file beside
    it took the name and 15 characters more. Now the temporary name is cut, and the output lands under its own."""
    for name in ("a" * 251 + ".csv", "é" * 120 + ".csv"):  # 255 bytes; 244 bytes in 124 characters
        final = tmp_path / name
        tmp = temp_beside(final)
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith(".part")
        tmp.write_text("t,v\n")
        install_output(tmp, final)
        assert final.read_text() == "t,v\n" and sorted(p.name for p in tmp_path.iterdir()) == [name]
        tmp = temp_beside(final)
        with pytest.raises(FileExistsError):  # still never over a file there without being asked
            install_output(tmp, final)
        tmp.unlink()
        final.unlink()


@pytest.mark.req("GND-025", "AGT-080")
def test_integers_past_a_floats_range_or_pythons_digit_limit_are_refused_naming_the_key(tmp_path, capsys):
    """A 400-digit integer for a number of seconds or bytes raised OverflowError out of ``math.isfinite``, and one of
    5000 digits a ValueError out of the TOML parser (Python's limit on an integer's digits): each was a traceback
    from ``sunlit-ground server`` (and the second from ``schedule upload``). Now each is a line naming the key or
    the file."""
    config = tmp_path / "ground.toml"
    for table, said in (("[files]\nrate_bps = 1" + "0" * 400, "files.rate_bps: 10000000000000000000... (401 "
                         "characters) must be a number in [100, 1e+09]"),
                        ("[queue]\ncompleted_by_command_s = { TRAIN_START = 1" + "0" * 400 + " }",
                         "queue.completed_by_command_s.TRAIN_START: 10000000000000000000... (401 characters)"),
                        ("[files]\nlos_s = 1" + "0" * 5000, "not valid TOML: Exceeds the limit (4300 digits)")):
        config.write_text(f"{CRAFT}{table}\n")
        assert ground_main(["server", "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"sunlit-ground server: {config}: {said}") and err.count("\n") == 1, err
    config.write_text(f"{CRAFT}[retention]\nhk = {{ max_mb = 1{'0' * 400} }}\n")  # found in review: a traceback
    assert ground_main(["server", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "max_mb 10000000000000000000... (401 digits): a number of at least 0" in err and "Traceback" not in err, err
    with pytest.raises(ScheduleFileError, match=r"^sched: not valid TOML: Exceeds the limit \(4300 digits\)"):
        parse_schedule('[[entry]]\nafter_s = 1' + "0" * 5000 + '\ncommand = "NOOP"\n', NOW_UNIX_S, "sched")


def test_a_schedule_file_that_is_a_fifo_no_one_writes_a_device_or_too_long_is_refused_unread(tmp_path, capsys):
    """Found in audit: `schedule upload` read its file with read_text: a FIFO no one writes hung it, and a file
    of any size was read whole. Now one line naming the file, exit 2, before any server is asked; a pipe with its
    writer (`<(...)`) is still read as a file is (found in review: refused at first)."""
    from ground.schedule_file import MAX_FILE_BYTES

    fifo = tmp_path / "tags.toml"
    os.mkfifo(fifo)
    assert ground_main(["schedule", "upload", str(fifo), "--yes"]) == 2
    err = capsys.readouterr().err
    assert "tags.toml: a pipe that gave nothing" in err and "Traceback" not in err, err
    assert ground_main(["schedule", "upload", "/dev/zero", "--yes"]) == 2
    assert "/dev/zero: not a file (a device or a socket)" in capsys.readouterr().err
    long = tmp_path / "long.toml"
    long.write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    assert ground_main(["schedule", "upload", str(long), "--yes"]) == 2
    assert "long.toml: over 1024 KiB" in capsys.readouterr().err
    r, w = os.pipe()  # `schedule upload <(...)`: read through to its parse, which refuses it for what it says
    os.write(w, b'[[entry]]\nafter_s = -5\ncommand = "NOOP"\n')
    os.close(w)
    try:
        assert ground_main(["schedule", "upload", f"/dev/fd/{r}", "--yes"]) == 2
    finally:
        os.close(r)
    assert "refused before sending" in capsys.readouterr().err


@pytest.mark.req("GND-025")
def test_the_ground_command_line_imports_no_onnx():
    """Found in audit: every sunlit-ground command, --help too, imported onnx (about a second, more on a loaded
    machine): the receipts checker read two names from flight/compute/abft.py, which imports it."""
    import subprocess
    import sys

    probe = ("import sys, ground.cli as cli; cli.build_parser(); import ground.file_cli, ground.receipts; "
             "print(sorted(m for m in ('onnx', 'onnxruntime') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
