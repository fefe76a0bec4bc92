"""Audit of the operators' command lines and the dictionary's argument check: what an operator types wrong is
answered before anything is sent, in one printable line naming the key, with the exit status it means."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flight.cli import main as flight_main
from flight.link.definitions import DICTIONARY
from flight.link.dictionary import ArgumentError, FailureCode
from flight.link.memory_link import MemoryLink
from ground.cli import main as ground_main
from ground.client import GroundClient
from ground.procedure import Procedure, ProcedureFailed, ProcedureUnreadable, load_procedure

ROOT = Path(__file__).resolve().parent.parent
USERS_FILE = ('[users.ops]\nrole = "admin"\npassword = "$argon2id$v=19$m=65536,t=3,p=4$oLBQSqOch9ZKum8l7+KJ3w$'
              'S3ZiuXjk1DR+XdY8jJ2EUEJCTqXpZwMMedgKC3LvqZA"\n')  # a password hash as `sunlit-ground user add` writes it
DATE_SAID = "(release_unix_s is seconds since 1970-01-01 UTC, not a date: 2026-12-07T12:00:00Z is " \
            "release_unix_s=1796644800)"


@pytest.mark.req("GND-025")
def test_a_date_for_unix_seconds_is_answered_with_its_number_by_both_command_lines(capsys):
    """Found in audit: ``sunlit-ground send SCHEDULE_AT release_unix_s=2026-12-07T12:00:00Z`` said only "not a
    valid f64", where ``sunlit-flight packet encode`` said the number; both now say it, from one place."""
    argv = ["SCHEDULE_AT", "release_unix_s=2026-12-07T12:00:00Z", "command=NOOP"]
    res = subprocess.run([sys.executable, "-m", "ground.cli", "send", *argv], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stdout == ""
    assert res.stderr.startswith("refused before sending: ") and res.stderr.rstrip().endswith(DATE_SAID)
    assert flight_main(["packet", "encode", *argv]) == 2
    assert capsys.readouterr().err.rstrip().endswith(DATE_SAID)
    # The number it says is taken.
    assert flight_main(["packet", "encode", "SCHEDULE_AT", "release_unix_s=1796644800", "command=NOOP"]) == 0


@pytest.mark.req("GND-005")
def test_a_procedure_giving_a_date_for_unix_seconds_is_told_its_number():
    """The procedure API's own check says the number too, and sends nothing."""
    client = GroundClient(MemoryLink().ground)
    proc = Procedure(client, lambda text: None)
    try:
        with pytest.raises(ProcedureFailed) as failed:
            proc.send("SCHEDULE_AT", release_unix_s="2026-12-07T12:00:00Z", command="NOOP")
        assert DATE_SAID in str(failed.value) and str(failed.value).endswith("; not sent")
        assert proc.sent == []
    finally:
        proc.close()
        client.close()


@pytest.mark.req("LNK-007")
def test_unknown_argument_names_are_escaped_cut_and_counted():
    """Found in audit: ``validate_args`` joined unknown names whole: a newline or an escape sequence in one reached
    the ground's own messages as it was, and a 10 kB one (or a thousand) made a 10 kB line, what the command takes
    pushed past its end. Each name is now escaped and cut, at most five listed, the rest counted."""
    ping = DICTIONARY.command("PING")
    hostile = {"evil\nCommand SHUTDOWN completed\x1b[2J": 1, "x" * 10_000: 2, **{f"k{i}": i for i in range(50)}}
    with pytest.raises(ArgumentError) as e:
        ping.validate_args(hostile)
    text = str(e.value)
    assert e.value.code is FailureCode.BAD_ARGUMENTS
    assert text.isprintable() and len(text) < 300, text
    assert text.startswith("PING: unknown argument evil\\nCommand SHUTDOWN completed\\x1b[2J, k0, ")
    assert " and 47 more (takes token)" in text
    with pytest.raises(ArgumentError) as e:
        ping.validate_args({"y" * 10_000: 1})
    assert str(e.value) == f"PING: unknown argument {'y' * 37}... (takes token)"
    with pytest.raises(ArgumentError, match=r"^PING: unknown argument tokne \(takes token\)$"):  # a typo: as it was
        ping.validate_args({"tokne": 1})


@pytest.mark.req("GND-025")
def test_ground_send_says_a_hostile_argument_name_escaped(capsys):
    assert ground_main(["send", "NOOP", "bad\x1b[31mname\n=1"]) == 2
    err = capsys.readouterr().err
    assert err == "refused before sending: NOOP: unknown argument bad\\x1b[31mname\\n (takes no arguments)\n"


@pytest.mark.req("GND-053")
@pytest.mark.parametrize("argv,said", [
    (["SET_PARAM", "name=hk_period_s", "value=nan"], "SET_PARAM args.value: hk_period_s=nan is not a finite number"),
    (["SET_PARAM", "name=hk_period_s", "value=banana"], "SET_PARAM args.value: hk_period_s='banana' is not a valid"),
    (["FILE_DELETE", "name=../x"], "FILE_DELETE args.name: '../x': component '..' is not a plain name"),
])
def test_send_refuses_what_the_board_would_before_anything_is_sent(argv, said, tmp_path, capsys):
    """Found in audit: ``send SET_PARAM name=hk_period_s value=nan --yes`` was confirmed and sent (through the
    server, queued for a pass) to fail on board at completion, exit 1, where ``schedule upload`` refuses the same
    command on the ground; a file name that climbs out went up too. Both are now refused before the link is
    opened, naming the argument, exit 2."""
    url = f"zmq+ipc://{tmp_path}/link"
    assert ground_main(["--direct", url, "send", *argv, "--yes", "--timeout", "0.5"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("refused before sending: ") and said in captured.err
    assert captured.err.count("\n") == 1 and "direct link" not in captured.err and captured.out == ""


def test_send_takes_what_the_board_takes(tmp_path, capsys):
    """The check before sending refuses nothing the board takes: a good value goes on to the link (here, nobody
    listens on it: its outcome is unknown, exit 6)."""
    url = f"zmq+ipc://{tmp_path}/link"
    assert ground_main(["--direct", url, "send", "SET_PARAM", "name=hk_period_s", "value=2", "--yes",
                        "--timeout", "0.3"]) == 6
    assert "SET_PARAM: sent" in capsys.readouterr().out


@pytest.mark.req("GND-005")
def test_a_procedure_that_exits_as_it_loads_is_bad_input_named_with_its_line(tmp_path, capsys):
    """Found in audit: ``sys.exit(3)`` at a procedure file's top level ended ``sunlit-ground run`` silently with
    status 3, which says "a hazardous command not confirmed". It is a file that cannot be loaded: exit 2, named with
    its file and line, before any link is opened."""
    path = tmp_path / "leaves.py"
    path.write_text('"""Leaves as it loads."""\nimport sys\nsys.exit(3)\n\ndef run(proc):\n    pass\n')
    with pytest.raises(ProcedureUnreadable, match=r"leaves\.py:3: it called sys\.exit\(3\) as it loaded"):
        load_procedure(path)
    assert ground_main(["--direct", f"zmq+ipc://{tmp_path}/link", "run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sunlit-ground run: {path}:3: it called sys.exit(3)") and err.count("\n") == 1



@pytest.mark.req("GND-025")
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_an_output_that_cannot_be_written_is_said_without_a_traceback(tmp_path, monkeypatch, capsys):
    """Found in audit: ``sunlit-ground tm > log`` on a full disk (``> /dev/full``) ended in an OSError traceback, as
    did ``send``, once the command was on its way, where ``sunlit-flight`` says it in a line. Now one line and exit
    1; ``send`` says its command's outcome is unknown (exit 6), as at Ctrl-C, so nobody sends it again blindly."""
    with open("/dev/full", "w", buffering=1) as full:  # every line written to the output fails, as on a full disk
        monkeypatch.setattr(sys, "stdout", full)
        users = tmp_path / "users.toml"
        users.write_text(USERS_FILE)
        users.chmod(0o600)
        assert ground_main(["user", "list", "--users", str(users)]) == 1
        assert capsys.readouterr().err == "sunlit-ground user: No space left on device (writing its output)\n"
    with open("/dev/full", "w", buffering=1) as full:  # a new one: the first was pointed at /dev/null once it failed
        monkeypatch.setattr(sys, "stdout", full)
        assert ground_main(["--direct", f"zmq+ipc://{tmp_path}/link", "send", "PING", "token=1",
                            "--timeout", "0.3"]) == 6
        err = capsys.readouterr().err
        assert err.splitlines()[-1].startswith("PING: its output cannot be written (No space left on device); it "
                                               "may have been sent and its outcome is unknown")


def test_a_hostile_argument_name_is_escaped_in_the_field_a_schedule_refusal_leads_with():
    """Found in review: validate_args's message escaped and cut an unknown name, but the field the schedule's checks
    name (``args.NAME``, first in every refusal of `schedule upload` and a sequence's parse) carried it raw."""
    from flight.agent.schedule import CommandRefused, check_command

    with pytest.raises(CommandRefused) as refused:
        check_command(DICTIONARY, "NOOP", {"\x1b[2J\x1b[31mevil\nsecond line" + "x" * 3000: 1})
    field = refused.value.field
    assert field.startswith("args.\\x1b[2J\\x1b[31mevil\\nsecond") and field.isprintable() and len(field) < 60, field
