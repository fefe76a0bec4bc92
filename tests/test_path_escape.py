"""Every command argument that names a file on board is confined to its directory (SEC-006).

One table (:data:`CASES`) lists each command argument that becomes a path on board; every
escape pattern (:data:`PATTERNS`: an absolute path, ``..`` at the start and inside, a hidden
name, a NUL, a trailing newline, backslashes, a name as long as the dictionary allows, a
symbolic link planted inside the allowed directory that leads out, one that leads to another
directory of the same file area, and the allowed directory itself replaced by a link out) is tried on each, directly and as a time tag's command, against
an in-process agent whose compute worker runs. Each must fail with BAD_ARGUMENTS, the reason
naming the argument and never the board's absolute paths, and nothing outside the agent's
directories may be read (access times, where the file system keeps them) or written.

``bench/path_escape.py`` runs the same table and counts what was accepted (target 0).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flight.agent.file_args import FILE_ARGUMENTS
from flight.agent.schedule import SequenceError, parse_sequence
from flight.compute.worker import MODELS_DIR
from flight.link.definitions import DICTIONARY, ComputeState
from flight.link.dictionary import FailureCode, ValueType
from ground.client import CommandResult
from tests.inproc import InProcessAgent

SHIPPED_MODEL = MODELS_DIR / "cloud_screen.onnx"
MODEL_SHA256 = hashlib.sha256(SHIPPED_MODEL.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Case:
    """One argument that names a file. ``value``: a plain name a planted link answers to;
    ``link``: where (under the state directory) a link to ``outside/target`` is planted;
    ``linked_dir``: the allowed directory replaced by a link to ``outside/`` (then ``dir_value``
    is tried). None where no file is found by that name (a model is found through the store's
    manifest, a version only ever names a file the store writes by rename)."""

    command: str
    argument: str
    args: dict[str, Any] = field(default_factory=dict)
    value: str = "evil"
    link: str | None = None
    target: str = ""
    linked_dir: str | None = None
    dir_value: str | None = None

    @property
    def id(self) -> str:
        return f"{self.command}.{self.argument}"


# The table: every command argument that becomes a path on board.
CASES = (
    Case("INFER_START", "input_set", link="compute/data/evil.npz", target="evil.npz", linked_dir="compute/data"),
    Case("INFER_START", "model", {"input_set": "cloud_tiles_test"}),
    Case("TRAIN_START", "dataset", {"steps": 10}, link="compute/data/evil.npz", target="evil.npz",
         linked_dir="compute/data"),
    Case("MODEL_INSTALL", "name", {"version": "1", "sha256": MODEL_SHA256}, link="compute/staging/evil.onnx",
         target="evil.onnx", linked_dir="compute/staging"),
    Case("MODEL_INSTALL", "version", {"name": "good", "sha256": MODEL_SHA256}, value="1"),
    Case("MODEL_ROLLBACK", "name"),
    Case("SEQUENCE_START", "name", link="sequences/evil.toml", target="evil.toml", linked_dir="sequences"),
    Case("FILE_DOWNLINK", "name", value="products/evil.txt", link="compute/products/evil.txt", target="evil.txt",
         linked_dir="compute/products"),
    Case("FILE_LIST", "directory", value="products/evil", link="compute/products/evil", target="",
         linked_dir="compute/products", dir_value="products"),
    Case("FILE_DELETE", "name", value="products/evil.txt", link="compute/products/evil.txt", target="evil.txt",
         linked_dir="compute/products"),
)

# String arguments that name no file, and why: checked so that a new one must be placed.
NOT_FILES = {
    ("SET_PARAM", "value"): "a parameter's value (no parameter is a path)",
    ("SET_POWER_MODE", "name"): "looked up among the board's power modes",
    ("SET_TLE", "line1"): "orbit elements",
    ("SET_TLE", "line2"): "orbit elements",
    ("MODEL_INSTALL", "sha256"): "64 hex digits, checked",
    ("SCHEDULE_AT", "command"): "looked up in the dictionary",
    ("SCHEDULE_AFTER", "command"): "looked up in the dictionary",
    ("SCHEDULE_AT", "args"): "its command's arguments: checked as that command's (test_a_time_tag_...)",
    ("SCHEDULE_AFTER", "args"): "its command's arguments: checked as that command's (test_a_time_tag_...)",
    ("FILE_CANCEL", "transfer"): "looked up among the transfers",
    ("KEY_LOAD", "wrapped"): "80 hex digits, unwrapped under a master key",
    ("SHUTDOWN", "reason"): "logged",
}

SHAPE_PATTERNS = ("absolute", "traversal", "inner_traversal", "hidden", "nul", "newline", "backslash", "long")
LINK_PATTERNS = ("symlink", "linked_dir", "sibling")
PATTERNS = SHAPE_PATTERNS + LINK_PATTERNS


def escape_value(case: Case, pattern: str) -> str:
    """The value ``pattern`` gives ``case``'s argument (shape patterns only)."""
    max_len = DICTIONARY.command(case.command).arg(case.argument).spec.max_len
    top = "products/" if case.command.startswith("FILE_") else ""
    return {
        "absolute": "/etc/passwd",
        "traversal": "../../etc/passwd",
        "inner_traversal": f"{top}a/../../../x",
        "hidden": f"{top}.x",
        "nul": f"{top}x\x00y",
        "newline": f"{top}x\n",
        "backslash": f"{top}..\\..\\x",
        "long": ((top or "data/") + "a" * max_len)[:max_len],
    }[pattern]


def applies(case: Case, pattern: str) -> bool:
    return {"symlink": case.link is not None, "linked_dir": case.linked_dir is not None,
            "sibling": case.link is not None}.get(pattern, True)


class EscapeRig:
    """An in-process agent with its compute worker running, and ``outside/`` next to it: files
    a link could lead to (each one would make its command succeed if it were followed)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.state = tmp / "agent"
        self.outside = tmp / "outside"
        self.outside.mkdir()
        x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
        np.savez(self.outside / "evil.npz", x=x, y=(x[:, 0] > 0).astype(np.int64))
        shutil.copyfile(SHIPPED_MODEL, self.outside / "evil.onnx")
        (self.outside / "evil.toml").write_text('name = "evil"\n[[step]]\ncommand = "NOOP"\n')
        (self.outside / "evil.txt").write_text("a secret outside the agent's directories\n")
        self.rig = InProcessAgent(self.state, compute_enabled=True, allow_unsigned_models=True)
        self.compute = self.state / "compute"
        try:
            self._wait_for_worker()
            (self.compute / "data").mkdir(exist_ok=True)
            (self.state / "sequences").mkdir(exist_ok=True)
            shutil.copyfile(SHIPPED_MODEL, self.compute / "staging" / "good.onnx")  # MODEL_INSTALL.version's name
            self.atime_kept = self._atime_probe()
            self.before = self.look()
        except BaseException:
            self.close()
            raise

    def _wait_for_worker(self, limit_s: float = 90.0) -> None:
        deadline = time.monotonic() + limit_s
        while self.rig.agent.compute.state is not ComputeState.RUNNING:
            assert time.monotonic() < deadline, "the compute worker did not start"
            self.rig.advance(0.05, 0.05)
            time.sleep(0.05)

    def _atime_probe(self) -> bool:
        """Whether this file system records reads (relatime: a read after a change does)."""
        probe = self.tmp / "probe"
        probe.write_text("x")
        st = probe.stat()
        os.utime(probe, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))
        before = probe.stat().st_atime_ns
        probe.read_text()
        kept = probe.stat().st_atime_ns != before
        probe.unlink()
        # From now on a read of anything outside shows: its access time is older than its change.
        for path in [self.outside, *self.outside.iterdir()]:
            st = path.stat()
            os.utime(path, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))
        return kept

    def look(self) -> dict[str, tuple[int, ...]]:
        """Stat (never read, never list) of what lies outside the agent's directories."""
        inside = [self.outside, *(self.outside / n for n in ("evil.npz", "evil.onnx", "evil.toml", "evil.txt"))]
        out = {}
        for p in [self.tmp, Path("/etc/passwd"), *inside]:
            st = p.stat()
            read = (st.st_atime_ns,) if self.atime_kept and p in inside else ()  # others' reads: not ours to see
            out[str(p)] = (st.st_size, st.st_mtime_ns, st.st_ino, *read)
        return out

    def plant(self, case: Case, pattern: str) -> tuple[str, list[tuple[Path, Path | None]]]:
        """Plant ``pattern``'s link for ``case``: (value to send, what to undo)."""
        undo: list[tuple[Path, Path | None]] = []
        if pattern == "sibling":  # a link to another directory of the same file area, and what it finds there
            root = self.compute if case.link.startswith("compute/") else self.state
            elsewhere = root / "elsewhere"
            elsewhere.mkdir()
            target = elsewhere / case.target if case.target else elsewhere
            if case.target:
                source = self.outside / case.target
                st = source.stat()
                shutil.copyfile(source, target)
                os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))  # this read is ours, not the agent's
            link = self.state / case.link
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
            return case.value, [(link, None), (elsewhere, None)]
        if pattern == "symlink":
            link = self.state / case.link
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(self.outside / case.target if case.target else self.outside)
            undo.append((link, None))
            return case.value, undo
        directory = self.state / case.linked_dir
        if directory.exists():
            kept = directory.with_name(directory.name + ".kept")
            directory.rename(kept)
            undo.append((directory, kept))
        else:
            undo.append((directory, None))
        directory.symlink_to(self.outside, target_is_directory=True)
        return case.dir_value or case.value, undo

    @staticmethod
    def unplant(undo: list[tuple[Path, Path | None]]) -> None:
        for link, kept in undo:
            if link.is_dir() and not link.is_symlink():
                shutil.rmtree(link)
            else:
                link.unlink()
            if kept is not None:
                kept.rename(link)

    def send(self, command: str, args: dict[str, Any]) -> CommandResult:
        return self.rig.client.send(command, args, timeout_s=30.0, retries=0)  # a bound: the worker answers some

    def attempt(self, case: Case, pattern: str, scheduled: bool = False) -> CommandResult:
        """Try ``pattern`` on ``case`` (as a time tag's command when ``scheduled``)."""
        undo: list[tuple[Path, Path | None]] = []
        if pattern in LINK_PATTERNS:
            value, undo = self.plant(case, pattern)
        else:
            value = escape_value(case, pattern)
        args = {**case.args, case.argument: value}
        try:
            if scheduled:
                return self.send("SCHEDULE_AFTER", {"delay_s": 3600.0, "command": case.command,
                                                    "args": json.dumps(args)})
            return self.send(case.command, args)
        finally:
            self.unplant(undo)

    def secrets(self) -> set[str]:
        """The board's absolute paths that no answer may give away."""
        return {str(self.state), os.path.realpath(self.state), str(self.compute), str(self.tmp)}

    def close(self) -> None:
        self.rig.close()


def tries() -> list[tuple[Case, str]]:
    return [(c, p) for c in CASES for p in PATTERNS if applies(c, p)]


def scheduled_tries() -> list[tuple[Case, str]]:
    return [(c, p) for c in CASES for p in SHAPE_PATTERNS if not c.command.startswith("SEQUENCE_")]


def check_refused(rig: EscapeRig, case: Case, result: CommandResult) -> None:
    now = rig.look()
    touched, rig.before = now != rig.before, now  # one failure is reported once, not by every later try
    assert not touched, "something outside the agent's directories was read or written"
    assert result.failure is not None, f"accepted: {result.outcome}"
    assert result.failure.code is FailureCode.BAD_ARGUMENTS, result.outcome
    assert case.argument in result.failure.reason, result.failure.reason
    assert not any(secret in result.failure.reason for secret in rig.secrets()), result.failure.reason


@pytest.fixture(scope="module")
def escape_rig(tmp_path_factory):
    rig = EscapeRig(tmp_path_factory.mktemp("escape"))
    yield rig
    rig.close()


@pytest.mark.req("SEC-006")
def test_the_table_covers_every_argument_that_names_a_file():
    listed = {(c.command, c.argument) for c in CASES}
    assert listed == {(cmd, arg) for cmd, args in FILE_ARGUMENTS.items() for arg in args}
    for command in DICTIONARY.commands:
        for arg in command.args:
            if arg.spec.type is not ValueType.STRING:
                continue  # numbers, booleans and closed enumerations name no file
            key = (command.name, arg.name)
            assert (key in listed) != (key in NOT_FILES), f"{key}: a file-naming argument (add it to CASES " \
                                                          "and flight/agent/file_args.py) or not (NOT_FILES)?"
    assert set(NOT_FILES) <= {(c.name, a.name) for c in DICTIONARY.commands for a in c.args}


@pytest.mark.req("SEC-006")
@pytest.mark.parametrize("case,pattern", tries(), ids=[f"{c.id}-{p}" for c, p in tries()])
def test_each_escape_is_refused_naming_the_argument_and_touches_nothing_outside(escape_rig, case, pattern):
    check_refused(escape_rig, case, escape_rig.attempt(case, pattern))


@pytest.mark.req("SEC-006")
@pytest.mark.parametrize("case,pattern", scheduled_tries(), ids=[f"{c.id}-{p}" for c, p in scheduled_tries()])
def test_a_time_tag_carrying_an_escape_is_refused_when_taken(escape_rig, case, pattern):
    result = escape_rig.attempt(case, pattern, scheduled=True)
    check_refused(escape_rig, case, result)
    assert f"args.{case.argument}" in result.failure.reason


@pytest.mark.req("SEC-006")
def test_a_sequence_step_carrying_an_escape_is_refused_when_read():
    text = 'name = "s"\n[[step]]\ncommand = "FILE_DELETE"\nargs = { name = "../state.json" }\n'
    with pytest.raises(SequenceError, match=r"step\[0\]\.args\.name"):
        parse_sequence(text, "s.toml")


@pytest.mark.req("SEC-006")
def test_the_agent_still_takes_plain_names(escape_rig):
    """The confinement refuses escapes, not work: a plain name in each directory is taken."""
    rig = escape_rig
    (rig.compute / "data" / "plain.txt").write_text("p")
    assert rig.send("FILE_LIST", {"directory": "data/"}).completed
    assert rig.send("FILE_DELETE", {"name": "data/plain.txt"}).completed
    queued = rig.send("INFER_START", {"input_set": "cloud_tiles_test"})
    assert queued.completed, queued.outcome
    assert rig.send("JOB_CANCEL", {"job_id": queued.result["job_id"]}).completed
    assert rig.look() == rig.before


@pytest.mark.req("SEC-006")
def test_no_event_gives_away_the_boards_absolute_paths(escape_rig):
    escape_rig.rig.advance(2)
    for event in escape_rig.rig.client.events:
        text = json.dumps(event.args, default=str)
        assert not any(secret in text for secret in escape_rig.secrets()), (event.event.name, text)


@pytest.mark.req("SEC-006")
def test_a_file_error_names_its_file_not_the_boards_path():
    from flight.agent.dispatcher import describe_error

    reason = describe_error(PermissionError(13, "Permission denied", "/var/lib/sunlit/compute/products/a.npz"))
    assert reason == "PermissionError: Permission denied (a.npz)"


@pytest.mark.req("SEC-006")
def test_the_worker_neither_reads_nor_writes_through_a_linked_directory(tmp_path):
    from flight.compute import protocol as cp
    from flight.compute.worker import Worker
    from flight.files.filestore import NameRefused
    from flight.link.definitions import JobKind

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.npz").write_bytes(b"not read")
    root = tmp_path / "compute"
    root.mkdir()
    worker = Worker(f"ipc://{tmp_path}/w.sock", root)
    try:
        for name in ("products", "checkpoints", "incoming"):
            (root / name).rmdir()
            (root / name).symlink_to(outside, target_is_directory=True)
            with pytest.raises(NameRefused):
                worker._dir(name)  # products, checkpoints and tiles are never written or read through it
        assert worker.status().products == 0  # and products/ is not listed through it
        (root / "data").mkdir()
        (root / "data" / "x.npz").symlink_to(outside / "x.npz")
        refusal = worker._check_job(cp.JobSpec(job_id=1, kind=JobKind.TRAINING, name="x"))
        assert refusal.startswith("dataset:") and "leads outside" in refusal
        assert worker._relative(f"{root}/models/m@1.onnx: file missing") == "models/m@1.onnx: file missing"
    finally:
        worker._sock.close(0)


@pytest.mark.req("SEC-006", "FIL-007")
@pytest.mark.parametrize("command,args,said", [
    ("FILE_DOWNLINK", {"name": "models/cloud.onnx"}, "is not under"),
    ("FILE_DOWNLINK", {"name": "product/job-3.json"}, "is not under"),
    ("FILE_DOWNLINK", {"name": "products/a/b/c.json"}, "4 levels deep, at most 3"),
    ("FILE_DOWNLINK", {"name": "products"}, "is a directory"),
    ("FILE_DELETE", {"name": "models/cloud.onnx"}, "is not under"),
    ("FILE_DELETE", {"name": "products/x/"}, "component ''"),
    ("FILE_LIST", {"directory": "models/"}, "is not under"),
])
def test_a_time_tag_or_step_of_a_file_command_refuses_the_names_its_handler_refuses(tmp_path, command, args, said):
    """Found in audit: a time tag of FILE_DOWNLINK models/cloud.onnx (or a top mistyped, or a name too deep for the
    ground) was taken, and refused BAD_ARGUMENTS at its release, out of contact. Refused now, naming the argument,
    as the command sent directly is; a sequence step likewise when the file is read."""
    from flight.agent.schedule import ScheduleError, TimeSchedule

    schedule = TimeSchedule(tmp_path / "schedule.json")
    field = next(iter(args))
    with pytest.raises(ScheduleError, match=rf"^args\.{field}: .*{said}") as refused:
        schedule.insert_after(60.0, command, args, now_unix_s=1.8e9)
    assert refused.value.code is FailureCode.BAD_ARGUMENTS and len(schedule) == 0
    step = f'name = "s"\n[[step]]\ncommand = "{command}"\nargs = {json.dumps(args)}\n'.replace('": "', '" = "')
    with pytest.raises(SequenceError, match=rf"step\[0\]\.args\.{field}: .*{said}"):
        parse_sequence(step, "s.toml")
    with InProcessAgent(tmp_path / "agent") as rig:
        direct = rig.send(command, **args)
        assert direct.failure is not None and direct.failure.code is FailureCode.BAD_ARGUMENTS, direct.outcome


@pytest.mark.req("SEC-006", "FIL-011")
def test_a_time_tag_of_a_file_command_still_takes_a_name_its_handler_takes(tmp_path):
    """A file a time tag names need not be there yet (a product made before its pass): only its name is judged."""
    from flight.agent.schedule import TimeSchedule

    schedule = TimeSchedule(tmp_path / "schedule.json")
    for command, args in (("FILE_DOWNLINK", {"name": "products/job-3.json"}),
                          ("FILE_DOWNLINK", {"name": "sequences/pass.toml"}),
                          ("FILE_DOWNLINK", {"name": "logs/old/worker.log.1"}),
                          ("FILE_DELETE", {"name": "incoming/done/x.npy"}), ("FILE_LIST", {"directory": "products/"}),
                          ("FILE_LIST", {"directory": "sequences"})):
        entry = schedule.insert_after(60.0, command, args, now_unix_s=1.8e9)
        assert {k: entry.args[k] for k in args} == args
