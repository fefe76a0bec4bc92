"""Audit of what the agent and the ground keep on disk: the telemetry epoch, the command journal, the key file.

Each test is a finding: it failed before its fix.
"""

from __future__ import annotations

import pytest

from flight.link.sdls import MISSION_EPOCH_UNIX_S, TmEpoch


@pytest.mark.req("SEC-013")
def test_the_telemetry_epoch_never_goes_back_when_its_file_is_lost_twice_in_a_crash_loop(tmp_path):
    """Found in audit: one copy of tm_epoch.json; lost (damaged, then missing) after three starts within one
    minute, the epoch came from the clock's minutes twice: 10, 11, 12, then 10, 10, and a ground still running
    refused the board's telemetry as replays. A copy of it now keeps it going up."""
    path = tmp_path / "tm_epoch.json"
    minute_10 = lambda: MISSION_EPOCH_UNIX_S + 600.0  # noqa: E731 - every start within the same minute
    epochs = [TmEpoch(path, 1, minute_10).epoch for _ in range(3)]
    path.write_text("{")  # the first loss: damaged
    damaged = TmEpoch(path, 1, minute_10)
    epochs.append(damaged.epoch)
    assert "tm_epoch.json unreadable" in damaged.load_error and "other copy in force" in damaged.load_error
    assert (tmp_path / "tm_epoch.json.corrupt").exists()  # kept aside to be looked at
    path.unlink()  # the second: missing
    epochs.append(TmEpoch(path, 1, minute_10).epoch)
    (tmp_path / "tm_epoch.json.bak").unlink()  # the copy lost on its own: the file in force holds it
    epochs.append(TmEpoch(path, 1, minute_10).epoch)
    assert epochs == [10, 11, 12, 13, 14, 15]


_REWRITE_REFUSED = """
import resource, signal, sys
from flight.agent.journal import CommandJournal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as a full disk's ENOSPC
resource.setrlimit(resource.RLIMIT_FSIZE, (256, 256))
journal = CommandJournal(sys.argv[1])
print(len(journal.entries))
print(journal.load_error)
"""


@pytest.mark.req("AGT-016", "AGT-019")
def test_a_damaged_journal_whose_rewrite_the_disk_refuses_keeps_its_commands_for_the_next_start(tmp_path):
    """Found in audit: at a start that found the journal damaged it was moved aside, then rewritten without the
    damage; where the disk refused the rewrite, the commands read were in no file, and the start after knew none
    of them: each, retried, ran again. A real process under a file-size limit refuses the rewrite."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from flight.agent.journal import CommandJournal

    path = tmp_path / "commands.journal"
    journal = CommandJournal(path)
    for cmd_id in range(1, 31):
        journal.started(cmd_id, b"d" * 16, 1)
        journal.finished(cmd_id, True, 0, "")
    journal.close()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one damaged byte: the records it touches, not the others
    path.write_bytes(bytes(data))
    root = Path(__file__).resolve().parent.parent
    # No bytecode written under the limit: a .pyc cut short in the tree breaks every later import of its module
    done = subprocess.run([sys.executable, "-c", _REWRITE_REFUSED, str(path)], cwd=root, capture_output=True,
                          text=True, timeout=30, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 0, done.stderr
    read, said = done.stdout.splitlines()
    after = CommandJournal(path)  # room again: the next start
    assert int(read) >= 29 and sum(after.get(cmd_id) is not None for cmd_id in range(1, 31)) == int(read)
    assert "damaged stretch" in said and "not rewritten" in said and "read again" in said
    assert after.bad_records == 1 and "moved aside (commands.journal.corrupt)" in after.load_error  # said again
    assert (tmp_path / "commands.journal.corrupt").read_bytes() == bytes(data)  # and kept aside, as it was


_SAVE_KILLED = """
import os, sys, time
from flight.link.sdls import KeyRing, KeySlot

def held(src, dst):  # the temporary file is written and synced: the save is killed here
    print("written", flush=True)
    time.sleep(60)

os.replace = held
KeyRing({1: KeySlot(1, bytes(range(32)))}).save(sys.argv[1])
"""


@pytest.mark.req("SEC-003")
def test_a_key_file_save_killed_before_its_rename_leaves_no_copy_of_the_keys_after_the_next_save(tmp_path):
    """Found in audit: a ``sunlit-ground key`` killed between writing its temporary file and renaming it left a
    copy of every key beside the key file, one more each time; the next save now removes them (its own pattern
    only, under a lock of the folder, so never one another save is writing)."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from flight.link.sdls import KeyRing, KeySlot

    keys = tmp_path / "tc.keys"
    root = Path(__file__).resolve().parent.parent
    for _ in range(2):
        saving = subprocess.Popen([sys.executable, "-c", _SAVE_KILLED, str(keys)], cwd=root, stdout=subprocess.PIPE,
                                  text=True)
        try:
            assert saving.stdout.readline().strip() == "written"
        finally:
            os.kill(saving.pid, signal.SIGKILL)
            saving.wait(timeout=10)
            saving.stdout.close()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left and all(name.startswith(".tc.keys.") and name.endswith(".tmp") for name in left), left  # keys in each
    others = [tmp_path / ".tc.keys.sn.abcd1234.tmp", tmp_path / ".other.abcd1234.tmp"]  # not the key file's
    for other in others:
        other.write_text("kept")
    KeyRing({1: KeySlot(1, bytes(range(32)))}).save(keys)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([keys.name] + [o.name for o in others])
    assert KeyRing.load(keys).slots[1].key == bytes(range(32))


@pytest.mark.req("SEC-003")
def test_a_key_file_saves_where_its_folder_takes_no_lock(tmp_path, monkeypatch):
    """Found in review: the folder's lock, taken for the leftovers' sake, failed the whole save where the folder takes
    none (NFS wants a descriptor open for writing: EBADF). Such a folder is saved to all the same, as one that cannot
    be opened is; its leftovers are not looked for."""
    import errno
    import fcntl

    from flight.link import sdls
    from flight.link.sdls import KeyRing, KeySlot

    def no_lock(fd, operation):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(sdls.fcntl, "flock", no_lock)
    keys = tmp_path / "tc.keys"
    KeyRing({1: KeySlot(1, bytes(range(32)))}).save(keys)
    monkeypatch.setattr(sdls.fcntl, "flock", fcntl.flock)
    assert KeyRing.load(keys).slots[1].key == bytes(range(32))
