"""deploy/: findings of an audit of putting the agent on a board and keeping it running, each with the failure
a user met and its fix. The helpers are test_deploy.py's (a copy of the checkout, temporary roots)."""

from __future__ import annotations

import grp
import os
import resource
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import tarfile

import pytest

from tests.fakeboard import FIXTURES
from tests.test_deploy import (DEPLOY, INSTALL, UNINSTALL, install, jetson_root, source,  # noqa: F401 (source: a fixture)
                               venv_without_pip)

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PUSH = DEPLOY / "push.sh"
POWER_ACCESS = DEPLOY / "libexec/sunlit-power-access"
DUMP = DEPLOY / "dump_board.py"


def pip_env_with_no_network(index: str) -> dict[str, str]:
    """This machine's environment with pip seeing only ``index``: no config file, no wheelhouse of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=index, PIP_RETRIES="0", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


@pytest.mark.req("DEP-001")
def test_an_index_that_cannot_be_reached_is_said_in_one_line_not_as_setuptools(tmp_path, source):  # noqa: F811
    """Found in audit: on a board with no network to the package index the install ended on pip's "No matching
    distribution found for setuptools>=77" (the build's first need) and three lines that did not say the index
    could not be reached. Now the last line says so, names the index (not its credentials) and the offline ways."""
    root = jetson_root(tmp_path / "root")
    venv_without_pip(root / "opt/sunlit/venv", packages_of=sysconfig.get_paths()["purelib"])
    with socket.socket() as closed:  # bound, never listening: a connection to it is refused while it is held
        closed.bind(("127.0.0.1", 0))
        index = f"http://operator:secret@127.0.0.1:{closed.getsockname()[1]}/simple"
        proc = subprocess.run(["bash", str(INSTALL), "--root", str(root), "--source", str(source), "--python",
                               sys.executable, "--no-systemctl"], capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL, env=pip_env_with_no_network(index))
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.rstrip().splitlines()[-1]
    assert last.startswith(f"install.sh: pip could not reach the package index http://127.0.0.1:"
                           f"{index.rsplit(':', 1)[1]} ("), proc.stderr
    assert "so Sunlit and its dependencies could not be installed" in last
    assert "--venv-from" in last and "--no-pip with a wheel as --source" in last and "PIP_INDEX_URL" in last
    assert "secret" not in proc.stderr.splitlines()[-1]
    assert not (root / "opt/sunlit/venv/.sunlit-source").exists()  # nothing says Sunlit is installed


@pytest.mark.req("DEP-001")
def test_a_python_in_a_directory_that_is_not_there_is_named_as_given(tmp_path, source):  # noqa: F811
    """Found in audit: ``--python /opt/py310/bin/python3`` mistyped printed bash's "cd: /opt/py310/bin: No such file
    or directory" and then "--python /python3: not found", a path no one gave."""
    missing = tmp_path / "no such dir" / "python3"
    proc = subprocess.run(["bash", str(INSTALL), "--root", str(jetson_root(tmp_path / "root")), "--source",
                           str(source), "--python", str(missing), "--dry-run", "--no-systemctl"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"install.sh: --python {missing}: not found (give the path of a python3 >= "
                                        "3.10, or leave it out)"], proc.stderr
    assert proc.stdout == ""  # refused before it plans anything


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.req("DEP-007", "DEP-001")
def test_a_link_put_in_nvpmodels_directory_is_neither_granted_nor_given_back(tmp_path):
    """Found in audit: /var/lib/nvpmodel is the service group's to write once granted, so the agent's user can put a
    link to any file there as ``status``; sunlit-power-access, as root at the agent's next start, followed it with
    chgrp and chmod g+w (/etc/shadow writable by the agent's group), and uninstall.sh followed it with chgrp root and
    chmod g-w. Now the link is refused, said, and the file it points at is left as it was."""
    root = tmp_path / "root"
    (root / "etc/sunlit").mkdir(parents=True)  # the service's group, for uninstall.sh: the caller's here
    (root / "etc/nvpmodel.conf").write_text((FIXTURES / "nvpmodel_orin_nx_16gb.conf").read_text())
    (root / "var/lib/nvpmodel").mkdir(parents=True)
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$...\n")
    secret.chmod(0o640)
    (root / "var/lib/nvpmodel/status").symlink_to(secret)
    group = grp.getgrgid(os.getgid()).gr_name
    proc = subprocess.run(["sh", str(POWER_ACCESS), "--root", str(root), "--group", group], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0  # never fails the agent's start
    assert f"{root}/var/lib/nvpmodel/status is a symbolic link, not nvpmodel's file: not granted" in proc.stderr
    assert "1 failed)" in proc.stdout and mode(secret) == 0o640
    assert mode(root / "var/lib/nvpmodel") == 0o775  # the directory itself is still granted
    secret.chmod(0o660)  # as a grant by an earlier version left it
    out = subprocess.run(["bash", str(UNINSTALL), "--root", str(root), "--no-systemctl"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert f"give {root}/var/lib/nvpmodel back to root" in out and "status back to root" not in out
    assert mode(secret) == 0o660 and mode(root / "var/lib/nvpmodel") == 0o755


@pytest.mark.req("DEP-007")
def test_nvpmodels_own_files_are_granted_through_a_descriptor_never_by_name(tmp_path):
    """Found in review: between the link check and ``chmod g+w status`` (chmod has no -h: it follows a link), the
    agent's group, which may write /var/lib/nvpmodel, could swap status for a link to a file of its group (its own
    config) and have root make it writable. The folder and status are now changed through one descriptor opened
    without following a link: no chgrp or chmod by name touches them (a shim on PATH records each call)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/nvpmodel.conf").write_text((FIXTURES / "nvpmodel_orin_nx_16gb.conf").read_text())
    status = root / "var/lib/nvpmodel/status"
    status.parent.mkdir(parents=True)
    status.write_text("pmode:0002\n")
    status.chmod(0o644)
    status.parent.chmod(0o755)
    shims, log = tmp_path / "bin", tmp_path / "calls"
    shims.mkdir()
    for tool in ("chgrp", "chmod"):
        real = shutil.which(tool)
        (shims / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexec {real} "$@"\n')
        (shims / tool).chmod(0o755)
    group = grp.getgrgid(os.getgid()).gr_name
    proc = subprocess.run(["sh", str(POWER_ACCESS), "--root", str(root), "--group", group], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"})
    assert proc.returncode == 0 and "0 failed)" in proc.stdout, proc.stdout + proc.stderr
    assert mode(status) == 0o664 and mode(status.parent) == 0o775
    calls = log.read_text().splitlines() if log.exists() else []
    assert not [c for c in calls if "var/lib/nvpmodel" in c], calls


def test_power_access_given_an_option_without_its_value_says_so_in_one_line(tmp_path):
    """Found in audit: ``sunlit-power-access --root`` stopped on dash's "2: parameter not set"."""
    for option in ("--root", "--group", "--conf"):
        proc = subprocess.run(["sh", str(POWER_ACCESS), option], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2
        assert proc.stderr == f"sunlit-power-access: {option} needs a value\n"


@pytest.mark.req("DEP-001")
def test_a_relative_root_or_source_that_starts_with_a_dash_is_taken_as_a_path(tmp_path, source):  # noqa: F811
    """Found in audit: ``--root=-board`` (as the scripts ask for a value that starts with -) stopped on bash's "cd: -b:
    invalid option" and cd's usage; ``--source=-src`` the same. Both scripts now take them as the paths they are."""
    (tmp_path / "-board").mkdir()
    (tmp_path / "-src").symlink_to(source)
    proc = subprocess.run(["bash", str(INSTALL), "--root=-board", "--source=-src", "--python", sys.executable,
                           "--dry-run", "--no-systemctl"], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"Sunlit install into {tmp_path}/-board from {tmp_path}/-src (dry run")
    proc = subprocess.run(["bash", str(UNINSTALL), "--root=-board", "--dry-run"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"Sunlit uninstall from {tmp_path}/-board (dry run")


@pytest.mark.req("DEP-001")
@pytest.mark.parametrize("model, shown", [
    (b"Acme \x01Orin NX \xe9 carrier \xe2\x80\x93 rev B", "Acme ?Orin NX  carrier \u2013 rev B"),
    (b"Acme \x01Orin NX \xe2\x80\x93 \xe9", "Acme ?Orin NX ??? ?"),
])
def test_a_model_string_with_a_control_character_still_makes_a_config_the_agent_reads(tmp_path, source,  # noqa: F811
                                                                                      model, shown):
    """Found in audit: install.sh copied the device tree's model string into a comment of agent.toml as it was; one
    with a control character (a carrier's own device tree) or bytes that are not UTF-8 made agent.toml, and the SAFE
    fallback's copy of it, TOML no one could read: the agent and its fallback refused to start, at every run. UTF-8
    is kept; where iconv cannot say it (a byte that is not UTF-8 at the end), only ASCII."""
    root = tmp_path / "root"
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(model + b"\0")
    out = install(root, source).stdout
    assert "does not pass the agent's checks" not in out, out
    assert f'model "{shown}" -> board profile orin_nx_16gb' in out
    for conf in (root / "etc/sunlit/agent.toml", root / "opt/sunlit/share/agent.default.toml"):
        text = conf.read_text()
        assert f'#   model "{shown}" -> orin_nx_16gb\n' in text
        assert tomllib.loads(text)["hal"]["backend"] == "jetson"


@pytest.mark.req("DEP-001")
@pytest.mark.parametrize("script, switch", [(INSTALL, "--dry-run"), (INSTALL, "--no-pip"),
                                            (UNINSTALL, "--purge"), (PUSH, "--dry-run")])
def test_a_switch_given_a_value_is_refused_naming_the_switch(tmp_path, script, switch):
    """Found in audit: ``--purge=no`` was refused as "unknown option no", and push.sh's ``--dry-run=no`` took "no"
    for the board's HOST."""
    proc = subprocess.run(["bash", str(script), f"{switch}=no", "board"], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines()[-1] == (f"{script.name}: {switch} takes no value (leave it out, or write just "
                                            f"{switch})"), proc.stderr


@pytest.mark.req("DEP-001")
def test_push_refuses_a_dir_that_starts_with_a_dash():
    """Found in audit: ``--dir=-x/src`` went to the board's mkdir, ls and bash as an option ("mkdir: invalid
    option"), then "refused (above), or ssh failed"."""
    proc = subprocess.run(["bash", str(PUSH), "board", "--dir=-x/src", "--dry-run"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("push.sh: --dir -x/src: must not start with - (the board's mkdir and bash would take it "
                           "as an option)\n")


def test_dump_board_cut_short_leaves_no_part_of_a_fixture(tmp_path):
    """Found in audit: dump_board.py writing its .tar.gz onto a full disk (here: a file size limit) said so and left a
    truncated archive, which the next run refused as existing ("give a new path") and tests/test_deploy_fixtures.py
    could not open. Now the archive is whole or not there."""
    board = tmp_path / "board"
    for i in range(10):  # 75 KB that do not compress, in files of 2.5 KB each
        hwmon = board / f"sys/bus/i2c/drivers/ina3221/1-{i:04x}/hwmon/hwmon{i}"
        hwmon.mkdir(parents=True)
        for name in ("samples", "update_interval", "shunt1_resistor"):
            (hwmon / name).write_bytes(os.urandom(2500))
    out = tmp_path / "board.tar.gz"
    args = [sys.executable, str(DUMP), "--root", str(board), "--out", str(out), "--no-nvpmodel", "--no-tegrastats"]

    def small_files() -> None:  # Python ignores SIGXFSZ: a write past it fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))

    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, preexec_fn=small_files)
    assert proc.returncode == 2 and proc.stderr == "dump_board.py: [Errno 27] File too large\n", proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board"]  # nothing of the archive, whole or part
    subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    with tarfile.open(out) as tar:
        assert "meta.json" in tar.getnames() and len(tar.getnames()) > 30
