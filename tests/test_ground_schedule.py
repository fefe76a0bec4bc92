"""The ground's schedule file (ground/schedule_file.py) and ``sunlit-ground schedule``: checked
whole on the ground, naming the entry and key, then uplinked and listed from the agent."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ground.schedule_file import ScheduleFileError, parse_schedule

NOW = 1_796_000_000.0


@pytest.mark.req("AGT-080")
def test_a_schedule_file_becomes_time_tags_in_release_order():
    tags = parse_schedule("""
[[entry]]
after_s = 600
command = "PING"
args = { token = 3 }
[[entry]]
at = "2026-12-01T00:00:00Z"
command = "set_mode"
args = { mode = "IDLE" }
[[entry]]
at_unix_s = 1796000100.0
command = "NOOP"
""", NOW)
    assert [t.command for t in tags] == ["NOOP", "PING", "SET_MODE"], "a name in any case, as the console takes it"
    assert [t.entry for t in tags] == [2, 0, 1], "each keeps its place in the file, for the messages"
    assert tags[1].release_unix_s == NOW + 600 and tags[1].args == {"token": 3}
    assert tags[0].scheduler_args() == {"release_unix_s": 1796000100.0, "command": "NOOP", "args": "{}"}
    # after_s counts from when it is sent (found in audit: from the file's reading, so the confirmation's
    # question ate into it); an absolute time stays what it is
    assert tags[1].scheduler_args(NOW + 90.0) == {"release_unix_s": NOW + 690.0, "command": "PING",
                                                 "args": '{"token":3}'}
    assert tags[0].scheduler_args(NOW + 90.0)["release_unix_s"] == 1796000100.0


@pytest.mark.req("AGT-080")
@pytest.mark.parametrize("text, where", [
    ('[[entry]]\ncommand = "NOOP"\n', "entry[0]: give exactly one of"),
    ('[[entry]]\nafter_s = 5\nat_unix_s = 1796000100.0\ncommand = "NOOP"\n', "entry[0]: give exactly one of"),
    ('[[entry]]\nafter_s = 5\ncommand = "WARP"\n', "entry[0].command"),
    ('[[entry]]\nafter_s = 5\ncommand = "SET_MODE"\nargs = { mode = "WARP" }\n', "entry[0].args"),
    ('[[entry]]\nafter_s = 5\ncommand = "SCHEDULE_RESET"\n', "entry[0].command"),
    ('[[entry]]\nafter_s = 5\ncommand = "schedule_reset"\n', "entry[0].command: SCHEDULE_RESET manages the"),
    # Found in audit: a name typed in lower case was refused, with no hint; a misspelt one is given the close names
    ('[[entry]]\nafter_s = 5\ncommand = "set_mod"\n', "did you mean SET_MODE, "),
    ('[[entry]]\nat_unix_s = 1795000000.0\ncommand = "NOOP"\n', "entry[0].at_unix_s: "),
    ('[[entry]]\nat = "2026-12-01T00:00:00"\ncommand = "NOOP"\n', "entry[0].at: a time without a zone"),
    ('[[entry]]\nafter_s = 5\ncommand = "NOOP"\nwhen = 3\n', "entry[0].when: unknown key"),
    ('[[entry]]\nafter_s = true\ncommand = "NOOP"\n', "entry[0].after_s"),
    ('title = "x"\n', "title: unknown key"),
    ('[[entry]\n', "not valid TOML"),
    # Past the board's horizon, or a time in milliseconds: once sent after the entries before it (an audit).
    ('[[entry]]\nafter_s = 3000000\ncommand = "NOOP"\n', "entry[0].after_s: 34.7 days ahead, at most 30"),
    ('[[entry]]\nat_unix_s = 1796548000000\ncommand = "NOOP"\n', "entry[0].at_unix_s: "),
    # Found in audit: what the board refuses of a time tag was taken here, and the upload stopped half-way (the
    # entries before it on board); a 400-digit integer was a traceback.
    ('[[entry]]\nafter_s = 5\ncommand = "NOOP"\n[[entry]]\nafter_s = 6\ncommand = "SET_PARAM"\n'
     'args = { name = "hk_period_s", value = "banana" }\n', "entry[1].args.value"),
    ('[[entry]]\nafter_s = 5\ncommand = "FILE_DELETE"\nargs = { name = "../../etc/passwd" }\n', "entry[0].args.name"),
    ('[[entry]]\nafter_s = ' + "9" * 400 + '\ncommand = "NOOP"\n', "entry[0].after_s: a finite number of seconds"),
    ('[[entry]]\nat_unix_s = -' + "9" * 400 + '\ncommand = "NOOP"\n', "entry[0].at_unix_s: a finite number"),
])
def test_a_bad_schedule_file_is_refused_whole_naming_the_entry_and_key(text, where):
    with pytest.raises(ScheduleFileError) as info:
        parse_schedule(text, NOW, "plan.toml")
    assert "plan.toml" in str(info.value) and where in str(info.value)


@pytest.mark.system
@pytest.mark.req("AGT-080")
def test_schedule_upload_and_list_on_a_direct_link(start_agent, ipc_url, tmp_path):
    start_agent(ipc_url)
    plan = tmp_path / "plan.toml"
    plan.write_text('[[entry]]\nafter_s = 3600\ncommand = "NOOP"\n'
                    '[[entry]]\nafter_s = 7200\ncommand = "PING"\nargs = { token = 4 }\n')
    base = [sys.executable, "-m", "ground", "--direct", ipc_url, "schedule"]
    up = subprocess.run([*base, "upload", str(plan), "--yes"], capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    assert "on board as entry 1" in up.stdout and "on board as entry 2" in up.stdout
    listed = subprocess.run([*base, "list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "on-board schedule: 2 entries" in listed.stdout and "PING" in listed.stdout
    bad = subprocess.run([*base, "upload", str(tmp_path / "missing.toml")], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
