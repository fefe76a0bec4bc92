"""A full or read-only state disk: the agent starts, runs from memory, says so, and can be commanded to free it.

Found in audit: a full disk stopped the agent at boot (its mode's save raised), and the SAFE unit with it, for
good; a filesystem remounted read-only (ext4 errors=remount-ro) stopped it at its lock; and FILE_DELETE, the
command DISK_LOW tells the operators to use, was refused, as the command journal could not record it. The
disk's refusals are injected where the agent writes (ENOSPC, EROFS): a real full filesystem needs a mount.
"""

from __future__ import annotations

import errno
import os

import pytest

import flight.agent.state as state_module
import flight.storage as storage_module
from flight.agent.journal import CommandJournal
from flight.agent.state import StateFile
from flight.storage import DirectoryBusy, DirectoryLock
from tests.inproc import InProcessAgent


def _full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.req("AGT-019")
def test_the_agent_starts_on_a_full_disk_says_it_and_keeps_what_it_can_once_there_is_room(tmp_path, monkeypatch):
    state = tmp_path / "state"
    with InProcessAgent(state) as rig:  # a first start: a state file on the disk
        rig.advance(2.0)
    monkeypatch.setattr(state_module, "write_checked_json", _full)
    rig = InProcessAgent(state)  # raised at boot before: set_mode(SAFE) could not save the mode
    try:
        rig.advance(3.0)
        assert rig.agent.mode.value == "SAFE"
        said = rig.events("STATE_NOT_WRITTEN")
        assert said and said[0].args["reason"] == "No space left on device"
        values = rig.hk()
        assert values["state_write_failures"] >= 1 and values["internal_errors"] == 0
        assert len(rig.events("STATE_NOT_WRITTEN")) <= 2  # once a housekeeping period at most, not once a write
        capped = rig.send("SET_POWER_MODE", name="15W")
        assert capped.completed and "not kept across a restart" in capped.result["unsaved"]
        with pytest.raises(OSError, match="no job id handed out unsaved"):  # INFER_START and TRAIN_START fail so
            rig.agent.memory.allocate_job_id()
        monkeypatch.undo()  # room again: the next save keeps the cap
        assert rig.send("SET_POWER_MODE", name="15W").result.get("unsaved") is None
    finally:
        rig.close()
    assert StateFile(state / "state.json").load().power_mode_cap == "15W"


@pytest.mark.req("AGT-016", "AGT-019")
def test_an_idempotent_command_runs_unrecorded_when_the_journal_cannot_record_and_another_is_refused(
        tmp_path, monkeypatch):
    state = tmp_path / "state"
    with InProcessAgent(state) as rig:
        products = state / "compute" / "products"
        products.mkdir(parents=True, exist_ok=True)
        (products / "old.npz").write_bytes(b"x" * 1000)
        monkeypatch.setattr(CommandJournal, "started", _full)
        deleted = rig.send("FILE_DELETE", name="products/old.npz")
        assert deleted.completed and not (products / "old.npz").exists()
        assert "without its command journal record (No space left on device)" in deleted.result["journal"]
        missing = rig.send("FILE_DELETE", name="products/old.npz")  # a failure says it too
        assert missing.failed and "without its command journal record" in missing.failure.reason
        refused = rig.send("SAVE_PARAMS")  # not idempotent: never run unrecorded
        assert refused.failed and "not run: the command journal could not record it" in refused.failure.reason
        assert not rig.events("PARAMS_SAVED")


@pytest.mark.req("AGT-011", "AGT-019")
def test_the_directory_lock_is_taken_on_a_read_only_filesystem_and_still_keeps_a_second_program_out(
        tmp_path, monkeypatch):
    real_open = os.open

    def read_only(path, flags, *args):
        if flags & (os.O_RDWR | os.O_WRONLY | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    for made_before in (True, False):  # the lock file there from a start before, or not (the directory's then)
        where = tmp_path / f"made_{made_before}"
        if made_before:
            DirectoryLock(where, ".agent.lock", "agent").release()
        else:
            where.mkdir()
        monkeypatch.setattr(storage_module.os, "open", read_only)
        first = DirectoryLock(where, ".agent.lock", "agent")
        try:
            with pytest.raises(DirectoryBusy):
                DirectoryLock(where, ".agent.lock", "agent")
        finally:
            first.release()
            monkeypatch.undo()


@pytest.mark.req("AGT-019")
def test_a_state_the_full_disk_refuses_at_a_clean_stop_is_said_before_the_agent_ends(tmp_path, monkeypatch):
    """Found in audit: the state's last write, at a clean stop, refused by a full disk said nothing (each
    housekeeping period says STATE_NOT_WRITTEN; the stop did not), and the next start called the stop unclean."""
    rig = InProcessAgent(tmp_path / "state")
    try:
        rig.advance(2.0)
        monkeypatch.setattr(state_module, "write_checked_json", _full)
        rig.agent.stop("test")
        rig.agent.finish()
        rig.pump()
        (said,) = [e.args for e in rig.events("STATE_NOT_WRITTEN")]
        assert said["count"] >= 1 and "No space left" in said["reason"], said
    finally:
        rig.close()


@pytest.mark.req("AGT-019")
def test_a_transfer_state_a_full_disk_never_let_be_written_is_not_said_lost_at_the_next_start(tmp_path, monkeypatch):
    """Found in review: the agent noted that its transfer state (files.json) was written as it started on a full
    disk, which had refused it; with room again and no transfer since, a clean restart said STATE_CORRUPT "file
    transfers" for a loss that never was (and the ground failed its gets queued on board)."""
    import flight.files.entity as entity_module

    state = tmp_path / "state"
    monkeypatch.setattr(state_module, "write_checked_json", _full)
    monkeypatch.setattr(entity_module, "write_checked_json", _full)
    rig = InProcessAgent(state)
    rig.advance(2.0)
    assert not (state / "files.json").exists() and not rig.agent.memory.file_transfers_kept
    monkeypatch.undo()  # room again: the state is saved, files.json not (no transfer changed)
    rig.advance(120.0)
    rig.close()
    with InProcessAgent(state) as again:
        again.advance(2.0)
        assert [e.args for e in again.events("STATE_CORRUPT")] == []
        assert again.agent.memory.file_transfers_kept  # written at this start: from here on its absence is a loss


@pytest.mark.req("AGT-011", "AGT-019")
def test_the_directory_lock_is_taken_when_a_full_disk_refuses_its_pid_and_still_keeps_a_second_program_out(
        tmp_path, monkeypatch):
    """A new lock file on a full disk is made (an empty file needs no data block) but its pid is refused: the pid is
    only for another's message (found in audit: ENOSPC stopped the agent at its lock, a real full tmpfs, and the
    descriptor left open held the lock, so a second try said "in use by another agent")."""
    monkeypatch.setattr(storage_module.os, "pwrite", _full)
    first = DirectoryLock(tmp_path / "state", ".agent.lock", "agent")
    try:
        with pytest.raises(DirectoryBusy, match=r"in use by another agent \(pid \?\)"):
            DirectoryLock(tmp_path / "state", ".agent.lock", "agent")
    finally:
        first.release()
    DirectoryLock(tmp_path / "state", ".agent.lock", "agent").release()  # released: nothing left holding it
