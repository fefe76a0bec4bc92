"""deploy/: findings of an audit of putting the agent on a board and keeping it running, each with the failure
a user met and its fix. The helpers are test_deploy.py's (a copy of the checkout, temporary roots)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig

import pytest

from tests.test_deploy import INSTALL, jetson_root, source, venv_without_pip  # noqa: F401 (source: a fixture)


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
