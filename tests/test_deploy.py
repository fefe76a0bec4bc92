"""deploy/: install.sh and uninstall.sh into temporary roots, the systemd units, the udev
rule, the helpers, push.sh.

install.sh runs offline here (--venv-from this test run's virtualenv: the installed venv
sees its packages, and Sunlit itself is built from a copy of the checkout without an
index), so a real install into a temporary root takes a second or two.
"""

from __future__ import annotations

import configparser
import grp
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from flight.config import Config, load_config, parse_config
from flight.hal.jetson import detect_board
from flight.hal.jetson import parse_nvpmodel_conf
from flight.link.sdls import KeyRing
from hil.agent_process import free_tcp_port_pair
from tests.fakeboard import BOARDS, FIXTURES

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
INSTALL = DEPLOY / "install.sh"
UNINSTALL = DEPLOY / "uninstall.sh"
ORIN_NX_MODEL = BOARDS["orin_nx_16gb"].model  # "NVIDIA Jetson Orin NX Engineering Reference Developer Kit"
IN_VENV = sys.prefix != sys.base_prefix
if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


# --- helpers --------------------------------------------------------------------------------


def setuptools_major() -> int:
    try:
        import setuptools
    except ImportError:
        return 0
    return int(setuptools.__version__.split(".")[0])


@pytest.fixture(scope="session")
def source(tmp_path_factory) -> Path:
    """A copy of the checkout's code: the tests must not see (or leave) build output in the
    real one, nor reinstall because a colleague saved a file between two runs."""
    src = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for item in ("pyproject.toml", "README.md", "flight", "ground", "hil"):
        path = REPO / item
        if path.is_dir():
            shutil.copytree(path, src / item, ignore=ignore)
        else:
            shutil.copy2(path, src / item)
    # Built offline with this venv's setuptools: pyproject's test extra asks for >= 77 (the SPDX
    # license string, and bdist_wheel without the wheel package).
    return src


def jetson_root(path: Path, model: str = ORIN_NX_MODEL) -> Path:
    """An empty target root whose device tree says it is ``model``."""
    (path / "proc" / "device-tree").mkdir(parents=True)
    (path / "proc" / "device-tree" / "model").write_bytes(model.encode() + b"\0")
    return path


def run_script(script: Path, *args: str, check: bool = True,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, env=None if env is None else {**os.environ, **env})
    if check:
        assert proc.returncode == 0, f"{script.name} {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def install(root: Path, source: Path, *args: str, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    if not IN_VENV:
        pytest.skip("the offline install borrows the packages of the virtualenv the tests run in")
    return run_script(INSTALL, "--root", str(root), "--source", str(source), "--venv-from", sys.prefix,
                      "--no-systemctl", *args, check=check, env=env)


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything about every entry under ``root`` that a change would touch."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[str(path.relative_to(root))] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[str(path.relative_to(root))] = ("dir", st.st_mode, st.st_uid, st.st_mtime_ns)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[str(path.relative_to(root))] = ("file", st.st_mode, st.st_uid, st.st_mtime_ns, digest)
    return out


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def under_root(text: str, root: Path) -> str:
    """A config install.sh wrote, with the key files it names as the board sees them
    (/etc/sunlit/keys/...) moved under ``root``, where this test's install put them."""
    return text.replace('"/etc/sunlit/keys/', f'"{root}/etc/sunlit/keys/')


def installed_config(root: Path, path: Path | None = None) -> Config:
    """The agent's view of an installed config (its [security] files under ``root``)."""
    path = path or root / "etc/sunlit/agent.toml"
    return parse_config(tomllib.loads(under_root(path.read_text(), root)), str(path))


TC_KEY_LINE = re.compile(r"^(\d+) ([0-9a-f]{64})(?: (master))?$")


@pytest.fixture(scope="module")
def installed(tmp_path_factory, source):
    """One real install into a temporary Orin NX root, shared by the checks that only look."""
    root = jetson_root(tmp_path_factory.mktemp("root"))
    first = install(root, source)
    return root, first


# --- install.sh: dry run ---------------------------------------------------------------------


@pytest.mark.req("DEP-001")
def test_dry_run_prints_every_action_and_changes_nothing(tmp_path, source):
    root = jetson_root(tmp_path / "root")
    before = snapshot(root)
    out = run_script(INSTALL, "--root", str(root), "--source", str(source), "--python", sys.executable,
                     "--dry-run", "--no-systemctl").stdout
    assert snapshot(root) == before
    for expected in (
        f"would create {root}/opt/sunlit (0755)",
        f"would create {root}/etc/sunlit/keys (0700)",
        f"would create {root}/var/lib/sunlit/state (0750)",
        "would create the virtual environment",
        f"would install {root}/etc/sunlit/agent.toml",
        f"would install {root}/etc/systemd/system/sunlit-agent.service",
        f"would install {root}/etc/udev/rules.d/99-sunlit-link.rules",
        f"would create {root}/etc/sunlit/keys/zmq/clients (0750)",
        f"would generate the telecommand keys {root}/etc/sunlit/keys/tc.keys (SPI 1 active, SPI 100 master; mode 0600)",
        f"copy {root}/etc/sunlit/keys/tc.keys to the ground server over a secure channel",
        "$ install -d -m 00755",
        # steps done by a function show their commands too
        """$ (umask 077; printf "1 %s\\n100 %s master\\n" "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \\n')" """,
        f"; mv {root}/etc/sunlit/keys/tc.keys.tmp {root}/etc/sunlit/keys/tc.keys\n",
        f"would generate the agent's CurveZMQ certificate {root}/etc/sunlit/keys/zmq/agent.key and ",
        "zmq.auth.create_certificates(sys.argv[1], \"agent\")",
        f"$ tar -C {source} -cf - ",
        "--no-same-owner --no-same-permissions --warning=no-timestamp -xf -",
        "-m pip install --no-deps --force-reinstall",
    ):
        assert expected in out, out
    assert re.search(r"dry run: \d+ change\(s\) would be made; nothing was changed", out)
    assert "not creating user sunlit: --root is not /" in out


# --- install.sh: a real install and a second run ------------------------------------------------


def test_install_lays_out_the_board(installed):
    root, first = installed
    out = first.stdout
    assert "board profile orin_nx_16gb" in out and "not creating user sunlit: --root is not /" in out
    assert re.search(r"done: \d+ change\(s\)", out)
    for path, want in [("opt/sunlit", 0o755), ("etc/sunlit", 0o750), ("etc/sunlit/keys", 0o700),
                       ("var/lib/sunlit", 0o750), ("var/lib/sunlit/state", 0o750), ("var/lib/sunlit/compute", 0o750)]:
        assert (root / path).is_dir() and mode(root / path) == want, path
    # The telecommand keys: SPI 1 active, SPI 100 the master (key-encryption key), as the agent reads them.
    tc_keys = root / "etc/sunlit/keys/tc.keys"
    assert mode(tc_keys) == 0o600 and not (root / "etc/sunlit/keys/link.key").exists()
    lines = [line for line in tc_keys.read_text().splitlines() if line and not line.startswith("#")]
    assert [TC_KEY_LINE.match(line).group(1, 3) for line in lines] == [("1", None), ("100", "master")], lines
    ring = KeyRing.load(tc_keys)  # the "master" word: flight/link/sdls.py
    assert ring.active() == [1] and ring.slots[100].state == "master"
    assert len({ring.slots[1].key, ring.slots[100].key, bytes(32)}) == 3
    assert f"copy {tc_keys} to the ground server over a secure channel" in out and "tc_keys = PATH" in out
    # The agent's CurveZMQ certificate (pyzmq's format, the secret 0600) and the empty allow-list.
    zmq_dir = root / "etc/sunlit/keys/zmq"
    assert mode(zmq_dir / "agent.key_secret") == 0o600 and mode(zmq_dir / "clients") == 0o750
    assert list((zmq_dir / "clients").iterdir()) == [] and sorted(p.name for p in zmq_dir.iterdir()) == [
        "agent.key", "agent.key_secret", "clients"]  # no staging directory left behind
    from flight.link.curve import load_public, load_secret

    assert load_secret(zmq_dir / "agent.key_secret")[0] == load_public(zmq_dir / "agent.key")
    assert "give the ground server a copy of" in out and f"certificate (its NAME.key, never NAME.key_secret) into\n  {zmq_dir}/clients/" in out
    # The agent's loader checked the config with the keys it names (looked up under the root here).
    assert f"ok: {root}/etc/sunlit/agent.toml passes the agent's checks (its [security] files looked up under {root})" in out
    # units, journald drop-in and udev rule: copied as they are in deploy/ (the rule with this board's UART)
    for rel, src in [("etc/systemd/system/sunlit-agent.service", "systemd/sunlit-agent.service"),
                     ("etc/systemd/system/sunlit-safe.service", "systemd/sunlit-safe.service"),
                     ("etc/systemd/system/sunlit-power-access.path", "systemd/sunlit-power-access.path"),
                     ("etc/systemd/system/sunlit-power-access.service", "systemd/sunlit-power-access.service"),
                     ("etc/systemd/journald.conf.d/sunlit.conf", "systemd/journald.conf.d/sunlit.conf"),
                     ("etc/udev/rules.d/99-sunlit-link.rules", "udev/99-sunlit-link.rules")]:
        assert (root / rel).read_bytes() == (DEPLOY / src).read_bytes(), rel
        assert mode(root / rel) == 0o644
    for helper in ("sunlit-power-access", "sunlit-safe-config"):
        assert mode(root / "opt/sunlit/libexec" / helper) == 0o755
    assert (root / "opt/sunlit/venv/bin/sunlit-flight").exists()
    assert (root / "var/lib/sunlit/compute/models/golden/manifest.json").exists()
    assert mode(root / "etc/sunlit/install.conf") == 0o640


def test_the_config_is_for_the_detected_module(installed):
    root, _ = installed
    conf = root / "etc/sunlit/agent.toml"
    assert mode(conf) == 0o640
    text = conf.read_text()
    assert f'model "{ORIN_NX_MODEL}" -> orin_nx_16gb' in text and '# board = "orin_nx_16gb"' in text
    config = installed_config(root)
    assert (config.hal_backend, config.board) == ("jetson", None)  # detected at each start
    assert config.state_dir == Path("/var/lib/sunlit/state") and config.compute_dir == Path("/var/lib/sunlit/compute")
    assert config.link_url == "zmq://127.0.0.1:5550" and config.bench_supply is False
    # The GPU in FP32 (the worker's checks hold at their FP32 tolerance), said where an operator looks.
    assert config.compute_gpu_tf32 is False and tomllib.loads(text)["compute"]["gpu_tf32"] is False
    # The key files as the board sees them (the agent reads them there), not under the test's root.
    security = tomllib.loads(text)["security"]
    assert security == {"tc_keys": "/etc/sunlit/keys/tc.keys",
                        "zmq_server_secret": "/etc/sunlit/keys/zmq/agent.key_secret",
                        "zmq_clients": "/etc/sunlit/keys/zmq/clients"}
    assert config.tc_keys == root / "etc/sunlit/keys/tc.keys"
    assert (root / "opt/sunlit/share/agent.default.toml").read_text() == text


@pytest.mark.req("DEP-001")
def test_a_second_run_changes_nothing_and_says_so(installed, source):
    root, _ = installed
    before = snapshot(root)
    out = install(root, source).stdout
    assert snapshot(root) == before
    assert out.rstrip().endswith(f"nothing to change: Sunlit is installed and up to date in {root}")
    changes = [line for line in out.splitlines() if line.startswith("  ") and not line.startswith(("  ok:", "  WARNING"))
               and not line.startswith("    ")]
    assert all(not re.match(r"  (create|install|update|chmod|chown|generate|copy|enable)\b", line) for line in changes), changes
    assert f"ok: {root}/etc/sunlit/keys/tc.keys kept (telecommand keys)" in out  # byte for byte: the snapshot
    assert f"ok: {root}/etc/sunlit/keys/zmq/agent.key_secret kept" in out


def test_the_installed_venv_runs_the_selftest(installed, tmp_path):
    """The acceptance check after an install: the selftest from the installed venv, on this
    machine's linux backend, with the state directory, store and keys install.sh made."""
    root, _ = installed
    config = tmp_path / "selftest.toml"
    config.write_text(
        f'[link]\nurl = "zmq://127.0.0.1:{free_tcp_port_pair()}"\n[hal]\nbackend = "linux"\n'
        f'[paths]\nstate_dir = "{root}/var/lib/sunlit/state"\n[compute]\ndir = "{root}/var/lib/sunlit/compute"\n'
        f'[security]\ntc_keys = "{root}/etc/sunlit/keys/tc.keys"\n'
    )
    proc = subprocess.run([str(root / "opt/sunlit/venv/bin/python"), "-m", "flight.selftest", "--config", str(config),
                           "--json"],  # the key file the installer made, from [security] tc_keys
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    body = json.loads(proc.stdout)
    assert proc.returncode == 0 and body["passed"], proc.stdout + proc.stderr
    status = {r["check"]: r["status"] for r in body["rows"]}
    assert status["model store"] == "PASS" and status["telecommand keys"] == "PASS" and status["onnxruntime"] == "PASS"
    where = subprocess.run([str(root / "opt/sunlit/venv/bin/python"), "-c", "import flight; print(flight.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path).stdout
    assert where.startswith(str(root / "opt/sunlit/venv")), where  # the installed copy, not the checkout


def test_safe_config_turns_compute_off_and_falls_back_to_the_default(installed, tmp_path):
    root, _ = installed
    python = str(root / "opt/sunlit/venv/bin/python")
    helper = str(root / "opt/sunlit/libexec/sunlit-safe-config")
    default = tmp_path / "agent.default.toml"  # naming the key files under the test's root, as the board has them
    default.write_text(under_root((root / "opt/sunlit/share/agent.default.toml").read_text(), root))
    conf = tmp_path / "agent.toml"
    conf.write_text(under_root((root / "etc/sunlit/agent.toml").read_text(), root)
                    + '\n[parameters]\nbattery_floor_pct = 40.0\n'
                    # An array of tables: the helper's own TOML writer once failed on it, and the fallback with it.
                    + '\n[[stations]]\nname = "svalbard"\nlat_deg = 78.23\nlon_deg = 15.39\n')
    out = tmp_path / "safe.toml"
    proc = subprocess.run([python, helper, str(conf), str(default), str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    safe, normal = load_config(out), load_config(conf)
    assert safe.compute_enabled is False
    assert (safe.link_url, safe.hal_backend, safe.state_dir, safe.parameters, safe.tc_keys, safe.stations) == (
        normal.link_url, normal.hal_backend, normal.state_dir, normal.parameters, normal.tc_keys, normal.stations)
    assert [s.name for s in safe.stations] == ["svalbard"]
    assert safe.tc_keys is not None  # the fallback authenticates telecommands too
    conf.write_text("[link]\nurl = 'tcp://nowhere'\n")  # the kind of config that keeps the agent from starting
    proc = subprocess.run([python, helper, str(conf), str(default), str(out)], capture_output=True, text=True)
    assert proc.returncode == 0 and f"using {default}" in proc.stderr
    assert load_config(out).compute_enabled is False and load_config(out).hal_backend == "jetson"
    for empty in ("", "# Sunlit agent configuration\n"):  # found in review: the SAFE agent ran on the defaults
        conf.write_text(empty)
        proc = subprocess.run([python, helper, str(conf), str(default), str(out)], capture_output=True, text=True)
        assert proc.returncode == 0 and "empty or comments only" in proc.stderr and f"using {default}" in proc.stderr
        assert load_config(out).hal_backend == "jetson" and load_config(out).tc_keys is not None
    proc = subprocess.run([python, helper, str(conf), str(tmp_path / "none.toml"), str(out)], capture_output=True, text=True)
    assert proc.returncode == 1 and "cannot be used either" in proc.stderr


def test_an_existing_config_and_keys_are_kept(tmp_path, source):
    root = jetson_root(tmp_path / "root")
    mine = '[link]\nurl = "serial:///dev/sunlit-link?baud=57600"\n'
    (root / "etc/sunlit/keys/zmq").mkdir(parents=True)
    (root / "etc/sunlit/agent.toml").write_text(mine)
    old_key = root / "etc/sunlit/keys/link.key"  # made by earlier versions
    old_key.write_bytes(b"k" * 32)
    tc_keys = root / "etc/sunlit/keys/tc.keys"
    provisioned = f"# ours\n1 {'ab' * 32}\n2 {'cd' * 32} revoked\n100 {'ef' * 32} master\n"
    tc_keys.write_text(provisioned)
    tc_keys.chmod(0o644)
    import zmq.auth

    zmq.auth.create_certificates(root / "etc/sunlit/keys/zmq", "agent")
    secret = root / "etc/sunlit/keys/zmq/agent.key_secret"
    secret.chmod(0o644)
    certificate = secret.read_bytes()
    out = first = install(root, source).stdout
    assert (root / "etc/sunlit/agent.toml").read_text() == mine
    new = root / "etc/sunlit/agent.toml.new"
    assert new.exists() and "never overwritten" in out and f"diff {root}/etc/sunlit/agent.toml {new}" in out
    # The keys are kept byte for byte; a mode others could read is corrected.
    assert tc_keys.read_text() == provisioned and mode(tc_keys) == 0o600 and f"chmod 0600 {tc_keys}" in out
    assert secret.read_bytes() == certificate and mode(secret) == 0o600 and f"chmod 0600 {secret}" in out
    assert "would generate" not in out and "generate the" not in out
    assert old_key.read_bytes() == b"k" * 32 and f"{old_key} (the link key of earlier versions) is not used" in out
    # The user's config names no telecommand keys: the agent would take any command. Said, every run.
    warning = f"WARNING: {root}/etc/sunlit/agent.toml has no [security] tc_keys"
    assert warning in out
    # Again: the user's config is theirs, the default has not changed: nothing to do.
    again = install(root, source).stdout
    assert again.rstrip().endswith("nothing to change: Sunlit is installed and up to date in " + str(root))
    assert warning in again
    # Said again at the end, where push.sh's long output is read (found in audit: only mid-way, then "up to date").
    assert f"\n{again.count('  WARNING: ')} WARNING(s) above: read them before the agent starts\nnothing to change" \
        in again
    # A new default (another link) is offered beside it, the user's file still untouched.
    out = install(root, source, "--link", "zmq://0.0.0.0:6000").stdout
    assert 'url = "zmq://0.0.0.0:6000"' in new.read_text() and (root / "etc/sunlit/agent.toml").read_text() == mine
    assert f"update {new}" in out
    # The link asked for is not the one the kept config names: said at this run and every later one
    # (an audit found the hint said once, then gone, and the agent on the old link).
    told = (f"WARNING: {root}/etc/sunlit/agent.toml names the link serial:///dev/sunlit-link?baud=57600, and the "
            "agent uses it; install.sh was given zmq://0.0.0.0:6000")
    assert told in out
    later = install(root, source).stdout
    assert told in later and f"{new}, an earlier default, is still beside it: diff" in later
    # A link never asked for (the first runs, on the default) is nothing to warn about (review: once a
    # false WARNING at every update, install.conf having kept the default as if it were asked for).
    assert "names the link" not in first and "names the link" not in again


@pytest.mark.req("DEP-001")
def test_an_empty_config_gets_the_default_a_config_with_content_is_kept(tmp_path, source):
    """Found in audit: an agent.toml left empty (an edit a power cut cut short: sudoedit writes in place) was kept as
    the engineer's, "ok" at every run, and the agent ran on its built-in defaults: the linux backend on a Jetson, no
    telecommand keys. An empty file is no one's choice: it gets the default, as a missing one does."""
    root = jetson_root(tmp_path / "root")
    conf = root / "etc/sunlit/agent.toml"
    conf.parent.mkdir(parents=True)
    for empty in ("", " \n\n", "# Sunlit agent configuration\n  # made by install.sh\n"):
        conf.write_text(empty)
        out = dry_run(root, source).stdout
        assert f"WARNING: {conf} is empty or comments only (an edit cut short?): the agent would run on its built-in " \
               "defaults; the default replaces it" in out
        assert f"would update {conf}\n" in out and "kept" not in out.split("[configuration]")[1].split("[keys]")[0]
    conf.write_text("# mine\n[rates]\nhk_period_s = 2\n")
    out = dry_run(root, source).stdout
    assert "is empty" not in out and f"{conf} kept (never overwritten)" in out and f"would update {conf}\n" not in out


def test_unknown_board_gets_the_linux_backend(tmp_path, source):
    root = jetson_root(tmp_path / "root", "Raspberry Pi 4 Model B Rev 1.4")
    out = install(root, source).stdout
    assert '"Raspberry Pi 4 Model B Rev 1.4" is not an Orin Nano, Orin NX or AGX Orin: configuring the linux backend' in out
    config = installed_config(root)
    assert config.hal_backend == "linux" and "board" not in (root / "etc/sunlit/agent.toml").read_text().split("[hal]")[1].split("[")[0]


def test_enable_under_a_root_with_systemctl(tmp_path, source):
    if shutil.which("systemctl") is None:
        pytest.skip("systemctl is not installed")
    if not IN_VENV:
        pytest.skip("the offline install borrows the packages of the virtualenv the tests run in")
    root = jetson_root(tmp_path / "root", BOARDS["agx_orin_64gb"].model)
    args = ["--root", str(root), "--source", str(source), "--venv-from", sys.prefix]
    out = run_script(INSTALL, *args).stdout
    wants = root / "etc/systemd/system/multi-user.target.wants"
    link, watch = wants / "sunlit-agent.service", wants / "sunlit-power-access.path"
    assert f"enable sunlit-agent.service in {root}" in out and os.readlink(link) == "/etc/systemd/system/sunlit-agent.service"
    # The watch on /etc/nvpmodel.conf (the grant again when the conf comes back under a running agent).
    assert f"enable sunlit-power-access.path in {root}" in out
    assert os.readlink(watch) == "/etc/systemd/system/sunlit-power-access.path"
    assert 'KERNEL=="ttyTHS1"' in (root / "etc/udev/rules.d/99-sunlit-link.rules").read_text()  # AGX Orin's UART
    out = run_script(INSTALL, *args).stdout
    assert f"ok: sunlit-agent.service enabled in {root}" in out and "nothing to change" in out
    assert f"ok: sunlit-power-access.path enabled in {root}" in out
    out = run_script(UNINSTALL, "--root", str(root)).stdout
    assert f"disable sunlit-agent.service in {root}" in out and not link.exists()
    assert f"disable sunlit-power-access.path in {root}" in out and not watch.exists() and not watch.is_symlink()
    assert not [p for p in (root / "etc/systemd/system").rglob("sunlit*")]


def test_uart_option_and_board_option(tmp_path, source):
    root = jetson_root(tmp_path / "root", "Custom carrier, no model we know")
    out = run_script(INSTALL, "--root", str(root), "--source", str(source), "--python", sys.executable, "--dry-run",
                     "--no-systemctl", "--board", "orin_nano", "--uart", "/dev/ttyTHS2").stdout
    assert "board orin_nano (--board" in out and "/dev/ttyTHS2 (chosen)" in out
    bad = run_script(INSTALL, "--root", str(root), "--dry-run", "--board", "xavier", check=False)
    assert bad.returncode == 2 and "--board xavier: choose orin_nano, orin_nx_16gb or agx_orin_64gb" in bad.stderr


def test_choices_are_kept_by_a_run_without_them(tmp_path, source):
    """An update is `push.sh HOST` with no options: the UART, link and board chosen at the
    first install must survive it (the SAFE fallback's default config and the udev rule)."""
    root = jetson_root(tmp_path / "root", "Custom carrier, no model we know")
    link = "serial:///dev/sunlit-link?baud=115200"
    install(root, source, "--uart", "ttyTHS2", "--link", link, "--board", "orin_nano")
    rule = root / "etc/udev/rules.d/99-sunlit-link.rules"
    default = root / "opt/sunlit/share/agent.default.toml"
    assert 'KERNEL=="ttyTHS2"' in rule.read_text() and f'url = "{link}"' in default.read_text()
    config = installed_config(root)  # the carrier's model names no board: pinned
    assert (config.hal_backend, config.board, config.link_url) == ("jetson", "orin_nano", link)
    assert (root / "etc/sunlit/install.conf").read_text().splitlines()[1:] == [
        "board=orin_nano", f"link={link}", "uart=ttyTHS2", "ort_wheel=", "ort_index="]
    before = snapshot(root)
    out = install(root, source).stdout
    assert "nothing to change" in out and snapshot(root) == before
    assert "board orin_nano (--board" in out and f"link {link}" in out
    # Given again, a choice changes: back to the board's default UART.
    install(root, source, "--uart", "ttyTHS0")
    assert 'KERNEL=="ttyTHS0"' in rule.read_text() and f'url = "{link}"' in default.read_text()


@pytest.mark.req("DEP-001")
def test_a_choice_mistyped_in_install_conf_is_refused_naming_the_line_not_an_option(tmp_path, source):
    """Found in audit: a value edited into install.conf and refused was named as an option ("--board orin_nx"), one the
    engineer never gave; uart=/dev/ttyTHS1 there was refused where --uart /dev/ttyTHS1 is taken."""
    root = jetson_root(tmp_path / "root")
    conf = root / "etc/sunlit/install.conf"
    conf.parent.mkdir(parents=True)
    for line, refused in (("board=orin_nx", "choose orin_nano"), ("uart=tty-1", "expected a device name"),
                          ('link="serial:///dev/sunlit-link"', "a link URL has no spaces, quotes")):
        conf.write_text(line + "\n")
        bad = dry_run(root, source, check=False)
        assert bad.returncode == 2, bad.stdout
        assert f"install.sh: {line} in {conf} (kept from an earlier run: fix that line, or give " \
               f"--{line.split('=')[0]}): {refused}" in bad.stderr, bad.stderr
    conf.write_text("uart=/dev/ttyTHS1\n")
    assert "else /dev/ttyTHS1 (chosen)" in dry_run(root, source).stdout
    assert "install.sh: --board orin_nx: choose" in dry_run(root, source, "--board", "orin_nx", check=False).stderr


def test_a_link_url_that_would_break_the_toml_is_refused(tmp_path, source):
    root = jetson_root(tmp_path / "root")
    bad = run_script(INSTALL, "--root", str(root), "--dry-run", "--link", 'zmq://x"\n[hal]', check=False)
    assert bad.returncode == 2 and "a link URL has no spaces, quotes or backslashes" in bad.stderr


def test_a_link_url_with_a_control_character_is_refused_before_any_config_is_written(tmp_path):
    """One once made an agent.toml the agent refuses and a default copy (the SAFE fallback's) that
    does not parse either, and the run ended "done"; it is said in one line, the character shown."""
    root = jetson_root(tmp_path / "root")
    bad = run_script(INSTALL, "--root", str(root), "--no-systemctl", "--no-pip", "--link",
                     "zmq://127.0.0.1:5550\x01", check=False)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert bad.stderr == "install.sh: --link $'zmq://127.0.0.1:5550\\001': a link URL has no control characters\n"
    assert not (root / "etc").exists() and not (root / "opt").exists()


def test_an_empty_value_is_refused_not_taken_as_not_given(tmp_path):
    """`--venv-from ""` once installed online from PyPI, as if no offline source had been asked for;
    push.sh's `--user ""` pushed to @HOST."""
    root = jetson_root(tmp_path / "root")
    for script, argv, said in ((INSTALL, ("--venv-from", ""), "--venv-from needs a value, not an empty one"),
                               (INSTALL, ("--ort-index=",), "--ort-index needs a value, not an empty one"),
                               (INSTALL, ("--board", ""), "--board needs a value, not an empty one"),
                               (DEPLOY / "push.sh", ("orin.local", "--user", ""), "--user needs a value, not an")):
        extra = ("--root", str(root), "--no-systemctl") if script == INSTALL else ()
        proc = run_script(script, *argv, *extra, "--dry-run", check=False)
        assert proc.returncode == 2 and said in proc.stderr, proc.stdout + proc.stderr
        assert "would" not in proc.stdout
    assert not (root / "etc").exists()


@pytest.mark.req("DEP-001")
def test_an_index_url_with_a_newline_or_space_is_refused_in_one_line_naming_the_option_or_line(tmp_path):
    """DEP-001: a newline in --ort-index once wrote a line of its own into install.conf, which the next
    run took as a choice (here: the link on every interface)."""
    root = jetson_root(tmp_path / "root")
    bad = run_script(INSTALL, "--root", str(root), "--dry-run", "--no-systemctl",
                     "--ort-index", "https://idx.example/simple\nlink=zmq://0.0.0.0:9", check=False)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert bad.stderr == ("install.sh: --ort-index $'https://idx.example/simple\\nlink=zmq://0.0.0.0:9': "
                          "an index URL has no spaces or control characters\n")
    conf = root / "etc/sunlit/install.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("ort_index=https://idx example/simple\n")
    kept = run_script(INSTALL, "--root", str(root), "--dry-run", "--no-systemctl", check=False)
    assert kept.returncode == 2 and f"install.sh: ort_index=https://idx\\ example/simple in {conf} (kept from an " \
        "earlier run: fix that line, or give --ort-index): an index URL has no spaces" in kept.stderr, kept.stderr
    # ... and only where it is used: with --ort-index given, the kept line stops nothing (a review)
    given = run_script(INSTALL, "--root", str(root), "--dry-run", "--no-systemctl",
                       "--ort-index", "https://idx.example/simple", check=False)
    assert given.returncode == 0 and "ort_index=" not in given.stderr, given.stdout + given.stderr


@pytest.mark.req("DEP-001")
def test_a_data_directory_linked_to_another_drive_is_not_changed_again_at_every_run(tmp_path, source):
    """DEP-001: /var/lib/sunlit linked to an NVMe drive (its target already 0750) was "chmod 0750" at
    every run: the link's own mode, 0777, was read back each time."""
    root = jetson_root(tmp_path / "root")
    target = tmp_path / "nvme" / "sunlit"
    for sub in ("", "state", "compute"):
        (target / sub).mkdir(parents=True, exist_ok=True)
        (target / sub).chmod(0o750)
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lib/sunlit").symlink_to(target)
    out = dry_run(root, source, "--no-pip").stdout
    assert f"ok: {root}/var/lib/sunlit\n" in out, out
    assert f"would chmod 0750 {root}/var/lib/sunlit" not in out


def fake_systemctl(directory: Path, version: int) -> dict[str, str]:
    """A PATH whose systemctl says it is systemd ``version`` (and does nothing else)."""
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "systemctl"
    exe.write_text(f'#!/bin/sh\n[ "$1" = --version ] && echo "systemd {version} ({version}.1-1)"\nexit 0\n')
    exe.chmod(0o755)
    return {**os.environ, "PATH": f"{directory}:{os.environ['PATH']}"}


def test_restart_mode_dropin_only_where_systemd_needs_it(tmp_path, source):
    """systemd >= 254 passes a restarting service through "failed", which would start the
    SAFE fallback after one crash: install.sh adds RestartMode=direct there, and only there."""
    if not IN_VENV:
        pytest.skip("the offline install borrows the packages of the virtualenv the tests run in")
    root = jetson_root(tmp_path / "root")
    dropin = root / "etc/systemd/system/sunlit-agent.service.d/10-restart-mode.conf"
    args = ["bash", str(INSTALL), "--root", str(root), "--source", str(source), "--venv-from", sys.prefix,
            "--no-systemctl"]
    new = subprocess.run(args, env=fake_systemctl(tmp_path / "v255", 255), capture_output=True, text=True, check=True)
    assert "[Service]\nRestartMode=direct\n" in dropin.read_text() and "systemd 255" in dropin.read_text()
    assert f"install {dropin}" in new.stdout
    old = subprocess.run(args, env=fake_systemctl(tmp_path / "v249", 249), capture_output=True, text=True, check=True)
    assert not dropin.exists() and "systemd 249 has no RestartMode=" in old.stdout
    again = subprocess.run(args, env=fake_systemctl(tmp_path / "v249", 249), capture_output=True, text=True, check=True)
    assert "ok: no RestartMode= drop-in (systemd 249 < 254)" in again.stdout and "nothing to change" in again.stdout


def fake_ort_gpu_wheel(directory: Path) -> Path:
    """A stand-in for NVIDIA's onnxruntime_gpu wheel: a module that says it has CUDA."""
    import base64
    import zipfile

    files = {
        "onnxruntime/__init__.py": '__version__ = "9.9.9"\n\ndef get_available_providers():\n'
                                   '    return ["CUDAExecutionProvider", "CPUExecutionProvider"]\n',
        "onnxruntime_gpu-9.9.9.dist-info/METADATA": "Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 9.9.9\n",
        "onnxruntime_gpu-9.9.9.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append("onnxruntime_gpu-9.9.9.dist-info/RECORD,,")
    files["onnxruntime_gpu-9.9.9.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheel = directory / "onnxruntime_gpu-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return wheel


@pytest.mark.skipif(setuptools_major() < 77, reason="building Sunlit offline needs setuptools >= 77 in this venv "
                    "(the test extra installs it)")
def test_no_pip_installs_wheels_offline(tmp_path, source):
    """--no-pip: Sunlit from a wheel, and a GPU onnxruntime wheel put in place of the CPU one."""
    wheels = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(wheels), str(source)], check=True, capture_output=True, cwd=tmp_path, timeout=300)
    (wheel,) = wheels.glob("sunlit-*.whl")
    ort_wheel = fake_ort_gpu_wheel(wheels)
    root = jetson_root(tmp_path / "root")
    args = ["--root", str(root), "--source", str(wheel), "--python", sys.executable, "--no-pip", "--no-systemctl",
            "--ort-wheel", str(ort_wheel)]
    out = run_script(INSTALL, *args).stdout
    assert "without dependencies, offline (--no-pip: the agent will not run)" in out
    assert f"install ONNX Runtime (gpu-wheel: {ort_wheel})" in out
    assert "installed: onnxruntime 9.9.9, providers CUDAExecutionProvider, CPUExecutionProvider" in out
    assert "model store]\n  not prepared" in out
    assert list((root / "opt/sunlit/venv/lib").glob("python*/site-packages/flight/selftest.py"))
    assert not (root / "opt/sunlit/src").exists()  # a wheel is installed as it is
    before = snapshot(root)
    out = run_script(INSTALL, *args).stdout
    assert "ok: ONNX Runtime as chosen (gpu-wheel)" in out and out.rstrip().endswith("up to date in " + str(root))
    assert snapshot(root) == before
    # An update with no --ort-wheel (push.sh HOST) keeps the GPU build: the wheel was kept where every run looks
    # (found in audit: the CPU build replaced it), and a reinstall of Sunlit puts it back over the CPU one.
    assert (root / "opt/sunlit/wheels" / ort_wheel.name).read_bytes() == ort_wheel.read_bytes()
    assert f"ort_wheel=/opt/sunlit/wheels/{ort_wheel.name}" in (root / "etc/sunlit/install.conf").read_text()
    ort_wheel.unlink()
    out = run_script(INSTALL, *args[:-2]).stdout
    assert "ok: ONNX Runtime as chosen (gpu-wheel)" in out and snapshot(root) == before
    (root / "opt/sunlit/venv/.sunlit-source").write_text("an older Sunlit\n")
    out = run_script(INSTALL, *args[:-2]).stdout
    assert f"install ONNX Runtime (gpu-wheel: {root}/opt/sunlit/wheels/{ort_wheel.name})" in out
    assert "providers CUDAExecutionProvider" in out and "WARNING" not in out


def changed_copy(source: Path, to: Path) -> Path:
    """A copy of ``source`` whose code differs: the next install reinstalls Sunlit from it."""
    shutil.copytree(source, to)
    with open(to / "flight" / "__init__.py", "a") as f:
        f.write("# a newer version\n")
    return to


def venv_without_pip(venv: Path, packages_of: str | None = None) -> None:
    """The venv a run cut short while it was made leaves (python, pyvenv.cfg, no pip yet); ``packages_of``: a venv
    whose packages it sees through a .pth, as --venv-from's does."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    if packages_of is not None:
        (site,) = venv.glob("lib/python*/site-packages")
        (site / "_sunlit_deps.pth").write_text(packages_of + "\n")


@pytest.mark.req("DEP-001")
def test_a_venv_left_without_pip_by_a_run_cut_short_is_made_again(tmp_path, source):
    """Found in audit: a run cut short while the venv was made left one without pip, which every later run took as
    "ok" and then failed in ("No module named pip"), until the engineer deleted it by hand."""
    root = jetson_root(tmp_path / "root")
    venv = root / "opt/sunlit/venv"
    venv_without_pip(venv)
    assert subprocess.run([str(venv / "bin/python"), "-c", "import pip"], capture_output=True).returncode != 0
    out = dry_run(root, source).stdout
    assert "ok: virtual environment" not in out
    assert f"would create the virtual environment {venv} (Python {sys.version_info[0]}.{sys.version_info[1]}, " \
           f"from {sys.executable}) again: the one there is another Python's, or has no pip (a run cut short)" in out
    assert "-m venv --clear " + str(venv) in out


@pytest.mark.req("DEP-001")
def test_a_run_cut_short_after_sunlit_installs_onnxruntime_again(tmp_path, source):
    """Found in audit: the source's mark was written before ONNX Runtime's step, and Sunlit's install (online) brings
    the CPU build back over the GPU one; a run cut short between the two left the CPU build, and every later run said
    "ok: ONNX Runtime as chosen". Here pip refusing the GPU wheel (a constraint) cuts the run short there."""
    root = jetson_root(tmp_path / "root")
    ort_wheel = fake_ort_gpu_wheel(tmp_path)
    install(root, source, "--ort-wheel", str(ort_wheel))
    newer = changed_copy(source, tmp_path / "newer")
    constraint = tmp_path / "constraint.txt"
    constraint.write_text("onnxruntime-gpu<9\n")
    cut = install(root, newer, check=False, env={"PIP_CONSTRAINT": str(constraint)})
    assert cut.returncode != 0 and "install Sunlit into the venv" in cut.stdout
    assert "install ONNX Runtime (gpu-wheel" in cut.stdout and "installed: onnxruntime" not in cut.stdout
    again = install(root, newer).stdout
    assert "install Sunlit into the venv" in again  # the marks say what is done: both steps are done again
    assert f"install ONNX Runtime (gpu-wheel: {root}/opt/sunlit/wheels/{ort_wheel.name})" in again, again
    assert "installed: onnxruntime 9.9.9, providers CUDAExecutionProvider" in again


@pytest.mark.req("DEP-001")
def test_pip_failing_online_says_what_to_do_on_a_board_with_no_network(tmp_path, source):
    """Found in audit: on a board with no network pip's retries and "No matching distribution" ended the run, exit 1,
    with no word from install.sh of the offline ways (a whole minute of retries on a real board)."""
    root = jetson_root(tmp_path / "root")
    venv_without_pip(root / "opt/sunlit/venv", packages_of=sysconfig.get_paths()["purelib"])
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    proc = run_script(INSTALL, "--root", str(root), "--source", str(source), "--python", sys.executable,
                      "--no-systemctl", check=False, env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(empty)})
    assert "install Sunlit into the venv with its dependencies from PyPI" in proc.stdout
    assert proc.returncode == 2, proc.stderr
    message = proc.stderr.rsplit("install.sh: ", 1)[-1]
    assert message.startswith("pip could not install Sunlit and its dependencies (its messages above)")
    assert "--venv-from" in message and "--no-pip with a wheel" in message and "check date" in message


@pytest.mark.req("DEP-001")
def test_a_board_clock_behind_the_files_is_said_once_not_by_tar_for_each_file(tmp_path, source):
    """Found in audit: on a board whose clock is behind the workstation's (no RTC battery, no NTP) tar said "time
    stamp ... in the future" once for each of the 220 files it copied, and nothing said what to do."""
    newer = changed_copy(source, tmp_path / "newer")
    ahead = 4102444800  # 2100-01-01: the files come from a clock far ahead of this one
    for path in [newer / "pyproject.toml", *(newer / "flight").rglob("*.py")]:
        os.utime(path, (ahead, ahead))
    proc = install(jetson_root(tmp_path / "root"), newer)
    assert "in the future" not in proc.stderr, proc.stderr
    assert proc.stdout.count("WARNING: this machine's clock says") == 1
    assert f"behind {newer}/pyproject.toml (2100-01-01 00:00 UTC):\n  set it before the agent starts" in proc.stdout
    assert "copy the code of" in proc.stdout


# --- ONNX Runtime: which build -------------------------------------------------------------------


def pytag() -> str:
    return f"cp{sys.version_info[0]}{sys.version_info[1]}"


def dry_run(root: Path, source: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_script(INSTALL, "--root", str(root), "--source", str(source), "--python", sys.executable,
                      "--dry-run", "--no-systemctl", *args, check=check)


def test_onnxruntime_gpu_wheel_from_a_directory(tmp_path, source):
    root = jetson_root(tmp_path / "root")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    arch = os.uname().machine
    for name in (f"onnxruntime_gpu-1.18.0-{pytag()}-{pytag()}-linux_{arch}.whl",
                 f"onnxruntime_gpu-1.20.0-{pytag()}-{pytag()}-linux_{arch}.whl",
                 f"onnxruntime_gpu-1.23.0-cp39-cp39-linux_{arch}.whl"):  # another Python: never chosen
        (wheels / name).write_bytes(b"not really a wheel")
    out = dry_run(root, source, "--ort-wheel", str(wheels)).stdout
    chosen = f"onnxruntime_gpu-1.20.0-{pytag()}-{pytag()}-linux_{arch}.whl"
    assert f"choice: NVIDIA's Jetson GPU build of ONNX Runtime, {chosen}" in out
    assert f"would install ONNX Runtime (gpu-wheel: {wheels / chosen})" in out
    assert "WARNING" not in out


@pytest.mark.req("DEP-001")
def test_a_newer_wheel_in_the_checkout_beats_the_one_kept(tmp_path, source):
    """Found in audit: once a wheel was kept in /opt/sunlit/wheels, a newer one put in the checkout's wheels/ (as
    the README says) was never used. The newest of the two is; the kept one wins a tie."""
    root = jetson_root(tmp_path / "root")
    arch = os.uname().machine
    kept = root / f"opt/sunlit/wheels/onnxruntime_gpu-1.18.0-{pytag()}-{pytag()}-linux_{arch}.whl"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"x")
    checkout = tmp_path / "checkout"
    shutil.copytree(source, checkout)
    newer = checkout / f"wheels/onnxruntime_gpu-1.20.0-{pytag()}-{pytag()}-linux_{arch}.whl"
    newer.parent.mkdir()
    newer.write_bytes(b"y")
    assert f"found {newer}" in dry_run(root, checkout).stdout
    newer.unlink()
    older = checkout / f"wheels/onnxruntime_gpu-1.17.0-{pytag()}-{pytag()}-linux_{arch}.whl"
    older.write_bytes(b"z")
    assert f"found {kept}" in dry_run(root, checkout).stdout


@pytest.mark.req("DEP-001")
def test_a_dry_run_that_cannot_read_the_install_refuses_to_guess(tmp_path):
    """Found in audit: a dry run without sudo over an installed board could not read /etc/sunlit (0750) and
    planned from nothing: new keys, every kept choice put back. It refuses, saying to run it with sudo."""
    runuser = shutil.which("runuser")
    if runuser is None or os.geteuid() != 0:
        pytest.skip("needs root and runuser to run the dry run as another user")
    import tempfile

    where = Path(tempfile.mkdtemp(prefix="sunlit-dry-"))  # outside pytest's own 0700 directory: nobody's reach
    try:
        where.chmod(0o755)
        root = where / "root"
        (root / "etc/sunlit/keys").mkdir(parents=True)
        (root / "etc/sunlit").chmod(0o750)
        script = where / "install.sh"  # a checkout nobody may not reach (CI's clone): a copy, before any source
        shutil.copy(INSTALL, script)
        proc = subprocess.run([runuser, "-u", "nobody", "--", "bash", str(script), "--root", str(root),
                               "--dry-run", "--no-systemctl"], capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(where)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"--dry-run: cannot read {root}/etc/sunlit, so it cannot say what a run would change: run it with " \
           "sudo" in proc.stderr, proc.stderr


def test_onnxruntime_wheel_found_in_opt_sunlit_wheels(tmp_path, source):
    root = jetson_root(tmp_path / "root")
    (root / "opt/sunlit/wheels").mkdir(parents=True)
    wheel = root / f"opt/sunlit/wheels/onnxruntime_gpu-1.19.0-{pytag()}-{pytag()}-manylinux_2_28_{os.uname().machine}.whl"
    wheel.write_bytes(b"x")
    out = dry_run(root, source).stdout
    assert f"found {wheel}" in out and "Jetson GPU build" in out


def test_onnxruntime_gpu_from_an_index_and_errors(tmp_path, source):
    root = jetson_root(tmp_path / "root")
    out = dry_run(root, source, "--ort-index", "https://pypi.example.org/jp6/cu126").stdout
    assert "onnxruntime-gpu from https://pypi.example.org/jp6/cu126" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = dry_run(root, source, "--ort-wheel", str(empty), check=False)
    assert proc.returncode == 2 and f"no onnxruntime_gpu-*-{pytag()}-" in proc.stderr


def test_an_index_given_once_is_kept_and_a_gpu_build_is_not_replaced_in_silence(tmp_path, source):
    """Found in audit: --ort-index was not kept, so the next update (push.sh HOST) put the CPU build in its place."""
    root = jetson_root(tmp_path / "root")
    (root / "etc/sunlit").mkdir(parents=True)
    (root / "etc/sunlit/install.conf").write_text("board=\nlink=\nuart=\nort_wheel=\n"
                                                  "ort_index=https://pypi.example.org/jp6/cu126\n")
    out = dry_run(root, source).stdout
    assert "onnxruntime-gpu from https://pypi.example.org/jp6/cu126" in out
    # A wheel kept from before gives way to a newer one put where install.sh looks (a review), and so does an index
    wheels = root / "opt/sunlit/wheels"
    wheels.mkdir(parents=True)
    for version in ("1.18.0", "1.20.0"):
        (wheels / f"onnxruntime_gpu-{version}-{pytag()}-{pytag()}-linux_{os.uname().machine}.whl").write_bytes(b"x")
    (root / "etc/sunlit/install.conf").write_text(
        f"ort_wheel=/opt/sunlit/wheels/onnxruntime_gpu-1.18.0-{pytag()}-{pytag()}-linux_{os.uname().machine}.whl\n")
    out = dry_run(root, source).stdout
    assert "onnxruntime_gpu-1.20.0" in out and "kept from before" not in out, out
    shutil.rmtree(wheels)
    (root / "etc/sunlit/install.conf").write_text("board=\n")
    (root / "opt/sunlit/venv").mkdir(parents=True)
    (root / "opt/sunlit/venv/.sunlit-ort").write_text("gpu-index https://pypi.example.org/jp6/cu126\n")
    out = dry_run(root, source).stdout
    assert "WARNING: ONNX Runtime was NVIDIA's GPU build (gpu-index); none is given, kept or found now" in out


def test_cpu_build_on_a_jetson_says_so(tmp_path, source):
    out = dry_run(jetson_root(tmp_path / "root"), source).stdout
    assert "choice: the CPU build of ONNX Runtime" in out
    assert "WARNING: this is a Jetson" in out and "generic\n  PyPI onnxruntime-gpu has no CUDA for Jetson" in out
    pc = tmp_path / "pc"
    pc.mkdir()
    out = dry_run(pc, source).stdout
    assert "choice: the CPU build" in out and "WARNING" not in out and "not a Jetson" in out


# --- board detection in shell agrees with flight.hal.jetson.detect_board ---------------------------


def shell_detect_board(model: str) -> str | None:
    text = INSTALL.read_text()
    func = re.search(r"^detect_board\(\) \{\n.*?^\}\n", text, re.M | re.S).group(0)
    proc = subprocess.run(["bash", "-c", func + 'detect_board "$1"', "_", model], capture_output=True, text=True)
    return proc.stdout.strip() or None


@pytest.mark.parametrize("model", [
    *(spec.model for spec in BOARDS.values()),
    "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
    "NVIDIA Jetson AGX Orin",
    "NVIDIA Jetson Nano Developer Kit",  # the older, non-Orin Nano
    "NVIDIA Jetson Xavier NX Developer Kit",
    "Raspberry Pi 4 Model B",
    "nvidia jetson orin   nx",
])
def test_shell_board_detection_matches_python(model):
    assert shell_detect_board(" ".join(model.split())) == detect_board(model)


def test_model_string_with_nul_and_odd_whitespace(tmp_path, source):
    root = tmp_path / "root"
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson   Orin\tNano Developer Kit\0")
    out = dry_run(root, source).stdout
    assert 'model "NVIDIA Jetson Orin Nano Developer Kit" -> board profile orin_nano' in out


# --- uninstall.sh --------------------------------------------------------------------------------


def test_uninstall_keeps_data_unless_purged(tmp_path, source):
    root = jetson_root(tmp_path / "root")
    install(root, source)
    before = snapshot(root)
    out = run_script(UNINSTALL, "--root", str(root), "--dry-run", "--no-systemctl").stdout
    assert snapshot(root) == before and f"would remove {root}/opt/sunlit" in out and "nothing was changed" in out
    out = run_script(UNINSTALL, "--root", str(root), "--no-systemctl").stdout
    for gone in ("opt/sunlit", "etc/systemd/system/sunlit-agent.service", "etc/systemd/system/sunlit-safe.service",
                 "etc/systemd/system/sunlit-power-access.path", "etc/systemd/system/sunlit-power-access.service",
                 "etc/systemd/journald.conf.d/sunlit.conf", "etc/udev/rules.d/99-sunlit-link.rules"):
        assert not (root / gone).exists(), gone
    for kept in ("var/lib/sunlit/compute/models/golden/manifest.json", "etc/sunlit/agent.toml", "etc/sunlit/keys/tc.keys",
                 "etc/sunlit/keys/zmq/agent.key_secret"):
        assert (root / kept).exists(), kept
    assert f"kept: {root}/var/lib/sunlit {root}/etc/sunlit" in out
    assert "nothing to remove from" in run_script(UNINSTALL, "--root", str(root), "--no-systemctl").stdout
    run_script(UNINSTALL, "--root", str(root), "--no-systemctl", "--purge")
    assert not (root / "var/lib/sunlit").exists() and not (root / "etc/sunlit").exists()


@pytest.mark.req("DEP-001")
def test_install_under_a_setgid_directory_is_idempotent_and_root_owns_the_code(tmp_path, source):
    """Found in audit: under a setgid parent every directory inherited the bit, which `chmod 0755` keeps, so
    each run reported the same chmods; and the staged code kept the pusher's modes (group-writable). Modes are
    exact from the first run, the second says nothing to change, and the code is not group-writable."""
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o2775)
    root = jetson_root(parent / "root")
    writable = tmp_path / "writable-source"
    shutil.copytree(source, writable)
    (writable / "flight" / "__init__.py").chmod(0o664)  # as a login user's umask 002 leaves it
    install(root, writable)
    assert mode(root / "opt/sunlit") == 0o755 and mode(root / "var/lib/sunlit/state") == 0o750
    code = root / "opt/sunlit/src/flight/__init__.py"
    assert not mode(code) & 0o022, oct(mode(code))
    again = install(root, writable).stdout
    assert "nothing to change" in again and "chmod" not in again, again


@pytest.mark.req("DEP-001")
def test_uninstall_gives_nvpmodels_status_back_to_root(tmp_path, source):
    """Found in audit: sunlit-power-access gives the service's group write access to /var/lib/nvpmodel (on disk,
    unlike sysfs), and uninstall left it: a group --purge deletes, whose id a later group may take."""
    root = jetson_root(tmp_path / "root")
    install(root, source)
    status = root / "var/lib/nvpmodel/status"
    status.parent.mkdir(parents=True)
    status.write_text("pmode:0002\n")
    status.chmod(0o644)
    status.parent.chmod(0o755)
    (root / "etc/nvpmodel.conf").write_text((FIXTURES / "nvpmodel_orin_nx_16gb.conf").read_text())
    group = (root / "etc/sunlit").group()  # the service's, as install.sh made it (the caller's under a --root)
    subprocess.run(["sh", str(DEPLOY / "libexec/sunlit-power-access"), "--root", str(root), "--group", group],
                   capture_output=True, text=True, check=True)
    assert mode(status) == 0o664 and mode(status.parent) == 0o775
    out = run_script(UNINSTALL, "--root", str(root), "--no-systemctl", "--dry-run").stdout
    assert f"would give {status.parent} back to root (no group write)" in out and mode(status) == 0o664
    run_script(UNINSTALL, "--root", str(root), "--no-systemctl")
    assert mode(status) == 0o644 and mode(status.parent) == 0o755
    assert "back to root" not in run_script(UNINSTALL, "--root", str(root), "--no-systemctl").stdout  # done once


def test_uninstall_keeps_the_engineers_gpu_wheels_unless_purged(tmp_path, source):
    """Found in audit: the README says to put NVIDIA's wheel in /opt/sunlit/wheels ("yours"), and uninstall removed
    /opt/sunlit whole: a reinstall then ran on the CPU."""
    root = jetson_root(tmp_path / "root")
    install(root, source)
    wheel = root / "opt/sunlit/wheels/onnxruntime_gpu-1.19.0-cp310-cp310-linux_aarch64.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"NVIDIA's")
    out = run_script(UNINSTALL, "--root", str(root), "--no-systemctl").stdout
    assert sorted(p.name for p in (root / "opt/sunlit").iterdir()) == ["wheels"] and wheel.read_bytes() == b"NVIDIA's"
    assert f"kept: {root}/var/lib/sunlit {root}/etc/sunlit {root}/opt/sunlit/wheels" in out
    assert "nothing to remove from" in run_script(UNINSTALL, "--root", str(root), "--no-systemctl").stdout
    run_script(UNINSTALL, "--root", str(root), "--no-systemctl", "--purge")
    assert not (root / "opt/sunlit").exists()


# install.sh and uninstall.sh on a live system: in a private mount namespace, with /etc, /opt and /var/lib overlaid
# by throw-away copies (nothing on this machine changes), and a systemctl that keeps each unit's state in files.

FAKE_SYSTEMCTL = r"""#!/bin/bash
# Each unit's ActiveState, queued job and enablement are files under $FAKE_SYSTEMD; loaded/UNIT, the unit file as
# the last daemon-reload read it. Every call but show, is-enabled and is-active is logged, with whether the agent's
# venv is there. $FAKE_SYSTEMD/on-stop/UNIT, where it exists, is what systemd does at `systemctl stop UNIT`; else
# the unit stops (inactive, no job).
d=$FAKE_SYSTEMD
case "$1" in show|is-enabled|is-active|--version) ;; *)
    venv=gone; [ -e /opt/sunlit/venv ] && venv=there; echo "$* (venv $venv)" >>"$d/log" ;; esac
case "$1" in
    --version) echo "systemd 252 (252.1-1)" ;;
    show) case "$3" in
              ActiveState) cat "$d/state/$5" 2>/dev/null || echo inactive ;;
              Job) cat "$d/job/$5" 2>/dev/null ;;
              NeedDaemonReload) if [ -e "$d/loaded/$5" ] && ! cmp -s "$d/loaded/$5" "/etc/systemd/system/$5"
                                then echo yes; else echo no; fi ;;
          esac
          exit 0 ;;
    is-enabled) [ -e "$d/enabled/$3" ] ;;
    is-active) [ "$(cat "$d/state/$3" 2>/dev/null)" = active ] ;;
    enable) touch "$d/enabled/$3" ;;
    disable) rm -f "$d/enabled/$3" ;;
    start|restart) echo active >"$d/state/$2" ;;
    stop) if [ -e "$d/on-stop/$2" ]; then . "$d/on-stop/$2"; else echo inactive >"$d/state/$2"; rm -f "$d/job/$2"; fi ;;
    reset-failed) if [ "$(cat "$d/state/$2" 2>/dev/null)" = failed ]; then echo inactive >"$d/state/$2"; fi ;;
    daemon-reload) rm -rf "$d/loaded"; mkdir "$d/loaded"
                   for f in /etc/systemd/system/sunlit*; do [ ! -f "$f" ] || cp "$f" "$d/loaded/"; done ;;
esac
"""
SUNLIT_UNITS = ("sunlit-power-access.path", "sunlit-agent.service", "sunlit-safe.service",
                "sunlit-power-access.service")


def on_a_live_root(tmp_path: Path, body: str) -> Path:
    """Run the shell ``body`` as root on / in a private mount namespace whose /etc, /opt and /var/lib are throw-away
    overlays, with FAKE_SYSTEMCTL and a udevadm that logs on PATH. The fake systemd's directory, for set-up
    before and reading after."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to run install.sh or uninstall.sh on / in a private mount namespace")
    fake = tmp_path / "systemd"
    for sub in ("state", "job", "enabled", "on-stop"):
        (fake / sub).mkdir(parents=True, exist_ok=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bin_dir / "udevadm").write_text('#!/bin/sh\necho "udevadm $*" >>"$FAKE_SYSTEMD/log"\n')
    for exe in bin_dir.iterdir():
        exe.chmod(0o755)
    t = tmp_path
    script = f"""set -e
for d in etc opt var/lib; do
    mkdir -p {t}/upper/$d {t}/work/$d
    mount -t overlay overlay -o lowerdir=/$d,upperdir={t}/upper/$d,workdir={t}/work/$d /$d
done
# The real sysfs read-only here, and no conf in the overlay's /etc (found in review: on a Jetson install.sh's
# sunlit-power-access would have changed the live board's clock files, for a group only the overlay has)
mount --bind /sys /sys
mount -o remount,bind,ro /sys
rm -f /etc/nvpmodel.conf
touch {t}/mounted
export PATH={bin_dir}:$PATH
{body}
"""
    # A pid namespace that dies with unshare (--kill-child): nothing the scripts start outlives a timeout
    proc = subprocess.run([unshare, "--pid", "--kill-child", "--mount", "--propagation", "private", "bash", "-c",
                           script],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "FAKE_SYSTEMD": str(fake)})
    if not (t / "mounted").exists():
        pytest.skip(f"cannot overlay /etc, /opt and /var/lib in a private mount namespace here: {proc.stderr[:200]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return fake


def uninstall_on_a_live_root(tmp_path: Path, states: dict[str, str], jobs: dict[str, int],
                             on_stop: dict[str, str]) -> dict:
    """uninstall.sh as on a board (no --root), the units in ``states`` with ``jobs`` queued; ``on_stop``: shell run
    at `systemctl stop UNIT` in place of a plain stop. What it printed, its systemctl calls, and what it left."""
    fake = tmp_path / "systemd"
    for sub in ("state", "job", "enabled", "on-stop"):
        (fake / sub).mkdir(parents=True)
    for unit, state in states.items():
        (fake / "state" / unit).write_text(state + "\n")
    for unit, job in jobs.items():
        (fake / "job" / unit).write_text(f"{job}\n")
    for unit in ("sunlit-agent.service", "sunlit-power-access.path"):
        (fake / "enabled" / unit).touch()
    for unit, shell in on_stop.items():
        (fake / "on-stop" / unit).write_text(shell)
    t = tmp_path
    on_a_live_root(t, f"""mkdir -p /opt/sunlit/venv/bin /etc/systemd/system/multi-user.target.wants
touch /opt/sunlit/venv/bin/sunlit-flight
for u in {" ".join(SUNLIT_UNITS)}; do cp {DEPLOY}/systemd/$u /etc/systemd/system/$u; done
ln -sf /etc/systemd/system/sunlit-agent.service /etc/systemd/system/sunlit-power-access.path \\
    /etc/systemd/system/multi-user.target.wants/
set +e
bash {UNINSTALL} >{t}/out 2>{t}/err
echo $? >{t}/rc
find /opt/sunlit /etc/systemd/system -name 'sunlit*' >{t}/left 2>/dev/null
exit 0""")
    log = (fake / "log").read_text().splitlines() if (fake / "log").exists() else []
    return {
        "rc": int((t / "rc").read_text()), "out": (t / "out").read_text(), "err": (t / "err").read_text(),
        "calls": [line for line in log if line.split()[0] in ("stop", "disable", "reset-failed", "daemon-reload")],
        "live": {u: (fake / "state" / u).read_text().strip() for u in SUNLIT_UNITS if (fake / "state" / u).exists()
                 and (fake / "state" / u).read_text().strip() not in ("inactive", "failed")},
        "jobs": sorted(p.name for p in (fake / "job").iterdir()),
        "left": (t / "left").read_text().split(),
    }


@pytest.mark.req("DEP-001", "DEP-007")
def test_on_a_board_install_watches_the_conf_and_reloads_units_a_cut_short_run_left_unread(tmp_path, source):
    """On / (a board), install.sh enables the agent and enables and starts sunlit-power-access.path, and a second
    run changes nothing. Found in review: systemd was told to reload only by the run that copied a unit, so a run cut
    short after the copy (a full disk, Ctrl-C; --no-systemctl here, which leaves the same) left systemd on the old
    units, and the next run, finding the files right, never reloaded them. It asks systemd (NeedDaemonReload)."""
    if not IN_VENV:
        pytest.skip("the offline install borrows the packages of the virtualenv the tests run in")
    t = tmp_path
    run = f"bash {INSTALL} --source {source} --venv-from {sys.prefix}"
    fake = on_a_live_root(t, f"""set +e
{run} >{t}/out1 2>&1; echo $? >{t}/rc1
{run} >{t}/out2 2>&1; echo $? >{t}/rc2
echo '# the version before' >>/etc/systemd/system/sunlit-agent.service
echo '# the version before' >>/etc/systemd/journald.conf.d/sunlit.conf
echo '# the version before' >>/etc/udev/rules.d/99-sunlit-link.rules
systemctl daemon-reload                                  # what systemd runs
: >$FAKE_SYSTEMD/log
{run} --no-systemctl >{t}/out3 2>&1; echo $? >{t}/rc3    # the update, cut short before it told systemd
{run} >{t}/out4 2>&1; echo $? >{t}/rc4
ls -A /opt/sunlit/.owed >{t}/owed
exit 0""")
    outs = {n: (t / f"out{n}").read_text() for n in range(1, 5)}
    assert [(t / f"rc{n}").read_text().strip() for n in range(1, 5)] == ["0"] * 4, outs
    first = outs[1]
    watch = "enable sunlit-power-access.path (grants power-mode access when /etc/nvpmodel.conf appears or changes)"
    for said in ("reload systemd's units", "enable sunlit-agent.service (starts at boot)", watch,
                 "start sunlit-power-access.path"):
        assert f"\n  {said}\n" in first, said
    assert (fake / "state/sunlit-power-access.path").read_text().strip() == "active"
    assert sorted(p.name for p in (fake / "enabled").iterdir()) == ["sunlit-agent.service", "sunlit-power-access.path"]
    assert "ok: sunlit-power-access.path watching /etc/nvpmodel.conf" in outs[2] and "nothing to change" in outs[2]
    assert "update /etc/systemd/system/sunlit-agent.service" in outs[3] and "not calling systemctl" in outs[3]
    assert ("reload systemd's units (changed on disk since systemd read them: sunlit-agent.service)" in outs[4]
            and "ok: /etc/systemd/system/sunlit-agent.service\n" in outs[4]), outs[4]
    assert (fake / "loaded/sunlit-agent.service").read_bytes() == (DEPLOY / "systemd/sunlit-agent.service").read_bytes()
    # Found in audit: journald's restart and udev's reload were owed by the cut-short run, and never done
    assert "\n  restart journald for the new size limits\n" in outs[4] and "\n  reload the udev rules\n" in outs[4]
    log = (fake / "log").read_text()
    assert "restart systemd-journald" in log and "udevadm control --reload-rules" in log, log
    assert (t / "owed").read_text() == "", "what was owed is cleared once done"


@pytest.mark.req("DEP-001")
def test_uninstall_stops_a_starting_agent_and_the_fallback_its_stop_queued_before_removing_a_file(tmp_path):
    """Found in review: uninstall read each unit's ActiveState once, in turn. The agent, still starting, was stopped;
    its stop ended "failed", so OnFailure= queued the SAFE fallback, which still read "inactive" (a start job
    queued), was skipped, and started from the deleted venv, for ever (Restart=always). Every unit is read again
    until none is running, starting, stopping or queued, and only then is a file removed; the path unit goes first,
    so nothing starts the power-access service meanwhile."""
    agent_stop_fails = ('echo failed >"$d/state/sunlit-agent.service"; rm -f "$d/job/sunlit-agent.service"\n'
                        'echo 102 >"$d/job/sunlit-safe.service"\n')  # what systemd does: OnFailure=sunlit-safe.service
    got = uninstall_on_a_live_root(tmp_path, {"sunlit-agent.service": "activating",
                                              "sunlit-power-access.path": "active"},
                                   {"sunlit-agent.service": 101}, {"sunlit-agent.service": agent_stop_fails})
    assert got["rc"] == 0, got["out"] + got["err"]
    assert got["calls"] == [
        "disable --quiet sunlit-agent.service (venv there)", "disable --quiet sunlit-power-access.path (venv there)",
        "stop sunlit-power-access.path (venv there)", "stop sunlit-agent.service (venv there)",
        "stop sunlit-safe.service (venv there)", "reset-failed sunlit-agent.service (venv there)",
        "daemon-reload (venv gone)"], got["calls"]
    assert "stop sunlit-agent.service (activating, job 101 queued)" in got["out"]
    assert "stop sunlit-safe.service (inactive, job 102 queued)" in got["out"]
    assert got["live"] == {} and got["jobs"] == [] and got["left"] == []


@pytest.mark.req("DEP-001")
def test_uninstall_stops_again_a_unit_whose_stop_was_canceled_and_removes_nothing_while_one_runs(tmp_path):
    """A stop whose job is canceled (systemctl stop exits 1, the unit still stopping) once ended uninstall there
    (set -e) with nothing said; it is stopped again, and a unit that will not stop leaves everything in place,
    named, with what to do."""
    once = ('if [ -e "$d/canceled" ]; then echo inactive >"$d/state/sunlit-agent.service"\n'
            'else touch "$d/canceled"; echo "Job for sunlit-agent.service canceled." >&2; exit 1; fi\n')
    got = uninstall_on_a_live_root(tmp_path / "once", {"sunlit-agent.service": "deactivating"}, {},
                                   {"sunlit-agent.service": once})
    assert got["rc"] == 0, got["out"] + got["err"]
    assert got["calls"].count("stop sunlit-agent.service (venv there)") == 2 and got["live"] == {} and got["left"] == []
    never = 'echo "Job for sunlit-agent.service canceled." >&2; exit 1\n'
    got = uninstall_on_a_live_root(tmp_path / "never", {"sunlit-agent.service": "deactivating"}, {},
                                   {"sunlit-agent.service": never})
    assert got["rc"] == 2, got["out"] + got["err"]
    assert "could not stop sunlit-agent.service (deactivating) after 3 tries: nothing removed" in got["err"]
    assert got["calls"].count("stop sunlit-agent.service (venv there)") == 3
    assert "/opt/sunlit" in got["left"] and "/etc/systemd/system/sunlit-agent.service" in got["left"]
    assert "daemon-reload (venv there)" not in got["calls"]


@pytest.mark.req("DEP-001")
def test_a_full_disk_leaves_no_part_of_a_file_and_the_next_run_writes_it_whole(tmp_path, source):
    """Found in review: install.sh copied each file straight onto its place (`install`), and on a full disk that left
    a truncated agent.toml (mode 0600), which every later run kept as the engineer's own, writing agent.toml.new
    beside it: the agent could not start on it, nor the SAFE fallback read it. A file is written beside its place
    and renamed: a full disk (here a 4 KiB tmpfs, in a private mount namespace) stops the run, naming the file, and
    leaves nothing; the run after it writes the config whole."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to mount a small tmpfs in a private mount namespace")
    if not IN_VENV:
        pytest.skip("the offline install borrows the packages of the virtualenv the tests run in")
    root = jetson_root(tmp_path / "root")
    etc = root / "etc/sunlit"
    etc.mkdir(parents=True)
    argv = " ".join(map(str, [INSTALL, "--root", root, "--source", source, "--venv-from", sys.prefix,
                              "--no-systemctl"]))
    t = tmp_path
    script = f"""set -e
mount -t tmpfs -o size=4k none {etc}
head -c 1 /dev/zero >{etc}/filler          # its one page is all the disk has
touch {t}/mounted
set +e
bash {argv} >{t}/out1 2>{t}/err1; echo $? >{t}/rc1
ls -A {etc} >{t}/ls1
mount -o remount,size=1m {etc}            # space again
bash {argv} >{t}/out2 2>{t}/err2; echo $? >{t}/rc2
cp -a {etc} {t}/after
exit 0
"""
    # A pid namespace that dies with unshare (--kill-child): nothing the scripts start outlives a timeout
    proc = subprocess.run([unshare, "--pid", "--kill-child", "--mount", "--propagation", "private", "bash", "-c",
                           script],
                          capture_output=True, text=True, timeout=600)
    if not (t / "mounted").exists():
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace here: {proc.stderr[:200]}")
    first = (t / "out1").read_text() + (t / "err1").read_text()
    assert (t / "rc1").read_text().strip() == "2", first
    assert f"could not write {etc}/agent.toml (is the disk full?); it is as it was" in first
    assert sorted((t / "ls1").read_text().split()) == ["filler", "keys"]  # no agent.toml, whole or part, no copy
    second = (t / "out2").read_text() + (t / "err2").read_text()
    assert (t / "rc2").read_text().strip() == "0", second
    after = t / "after"
    assert (after / "agent.toml").read_text() == (root / "opt/sunlit/share/agent.default.toml").read_text()
    assert mode(after / "agent.toml") == 0o640 and not (after / "agent.toml.new").exists()
    assert "kept (never overwritten)" not in second
    assert not [p for p in root.rglob(".*.sunlit-tmp")]


def test_install_makes_what_the_service_user_reads_readable_whatever_the_callers_umask(tmp_path, source):
    """Found in audit: under a hardened umask (027) the venv came out 0750 root:root and the services could not run
    it, while every check of the install, as root, passed."""
    if not IN_VENV:
        pytest.skip("the offline install borrows the packages of the virtualenv the tests run in")
    root = jetson_root(tmp_path / "root")
    hardened = tmp_path / "umask027.sh"
    hardened.write_text('umask 027\nexec bash "$@"\n')
    run_script(hardened, str(INSTALL), "--root", str(root), "--source", str(source), "--venv-from", sys.prefix,
               "--no-systemctl")
    for path in (root / "opt/sunlit/venv", root / "opt/sunlit/venv/bin", root / "opt/sunlit/src/flight"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o005 == 0o005, path


# --- systemd ---------------------------------------------------------------------------------------


def unit_lines(name: str) -> list[str]:
    return [line.strip() for line in (DEPLOY / "systemd" / name).read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def unit_settings(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in unit_lines(name):
        if "=" in line and not line.startswith("["):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def systemd_unit_dir() -> Path | None:
    for path in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if (path / "multi-user.target").exists():
            return path
    return None


def verify_root(tmp_path: Path, units: dict[str, str]) -> Path:
    """A root for `systemd-analyze verify --root`: the system's own units (for targets), ours,
    and a stub executable at every path our Exec lines name."""
    root = tmp_path / "verify-root"
    shutil.copytree(systemd_unit_dir(), root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for name, text in units.items():
        (root / "etc/systemd/system" / name).write_text(text)
        for line in text.splitlines():
            if line.startswith("Exec"):
                exe = line.split("=", 1)[1].lstrip("+-@!:").split()[0]
                stub = root / exe.lstrip("/")
                stub.parent.mkdir(parents=True, exist_ok=True)
                stub.write_text("#!/bin/sh\nexit 0\n")
                stub.chmod(0o755)
    return root


@pytest.fixture
def systemd_analyze():
    exe = shutil.which("systemd-analyze")
    if exe is None or systemd_unit_dir() is None:
        pytest.skip("systemd-analyze (package systemd) is not installed here")
    return exe


def test_systemd_analyze_verifies_the_units(tmp_path, systemd_analyze):
    names = ["sunlit-agent.service", "sunlit-safe.service", "sunlit-ground.service", "sunlit-power-access.path",
             "sunlit-power-access.service"]
    root = verify_root(tmp_path, {n: (DEPLOY / "systemd" / n).read_text() for n in names})
    proc = subprocess.run([systemd_analyze, "verify", "--man=no", f"--root={root}", *names],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr.strip() == "" and proc.stdout.strip() == "", proc.stderr + proc.stdout


def test_systemd_analyze_would_catch_a_mistake(tmp_path, systemd_analyze):
    """The check above is worth something only if verify complains about a bad unit."""
    text = (DEPLOY / "systemd/sunlit-agent.service").read_text().replace("WatchdogSec=60", "WatchdogSec=sixty")
    root = verify_root(tmp_path, {"sunlit-agent.service": text})
    proc = subprocess.run([systemd_analyze, "verify", "--man=no", f"--root={root}", "sunlit-agent.service"],
                          capture_output=True, text=True, timeout=60)
    assert "WatchdogSec" in proc.stderr or "sixty" in proc.stderr, proc.stderr


def test_agent_unit_is_a_watched_notify_service_with_a_safe_fallback():
    agent = unit_settings("sunlit-agent.service")
    assert agent["Type"] == ["notify"] and agent["NotifyAccess"] == ["main"] and int(agent["WatchdogSec"][0]) > 0
    assert agent["Restart"] == ["on-failure"] and agent["OnFailure"] == ["sunlit-safe.service"]
    assert int(agent["StartLimitBurst"][0]) >= 2 and int(agent["StartLimitIntervalSec"][0]) > 0
    assert agent["User"] == ["sunlit"] and agent["ExecStart"] == [
        "/opt/sunlit/venv/bin/sunlit-flight run --config /etc/sunlit/agent.toml"]
    assert agent["ProtectSystem"] == ["strict"] and "/var/lib/sunlit" in agent["ReadWritePaths"][0].split()
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges"):
        assert agent[key] == ["yes"], key
    assert agent["CapabilityBoundingSet"] == [""] and agent["StandardOutput"] == ["journal"]
    for key in ("MemoryMax", "CPUWeight", "Nice"):
        assert key in agent, key
    # Settings that would break what the agent needs: sysfs writes for nvpmodel, the GPU and
    # serial device nodes (ProtectClock implies a DeviceAllow= list, which closes the rest).
    for key in ("ProtectKernelTunables", "PrivateDevices", "DeviceAllow", "DevicePolicy", "ProtectClock",
                "MemoryDenyWriteExecute"):
        assert key not in agent, key


@pytest.mark.req("GND-024")
def test_ground_unit_can_open_a_spacecrafts_serial_line():
    """Found in an audit: the ground server's unit ran as a user outside ``dialout`` (the serial
    device is root:dialout 0660) with ProtectClock=yes, whose implied DeviceAllow= list closes every
    other device: a spacecraft on ``serial://`` could not be opened under it."""
    ground = unit_settings("sunlit-ground.service")
    assert ground["User"] == ["sunlit-ground"] and "dialout" in ground["SupplementaryGroups"][0].split()
    for key in ("ProtectClock", "PrivateDevices", "DeviceAllow", "DevicePolicy"):
        assert key not in ground, key


def test_safe_unit_is_the_agent_with_compute_off_and_never_beside_it():
    agent, safe = unit_settings("sunlit-agent.service"), unit_settings("sunlit-safe.service")
    assert safe["Conflicts"] == ["sunlit-agent.service"] and safe["StartLimitIntervalSec"] == ["0"]
    # Conflicts= orders nothing: started again, the agent waits for the fallback to have stopped (its lock, and
    # /run/sunlit, which both units make and its stop removes; found in audit).
    assert safe["After"] == [*agent["After"], "sunlit-agent.service"]
    # A zmq link on a LAN address binds once the address is up (exit 2 before: found in audit).
    for unit in (agent, safe):
        assert unit["Wants"] == ["network-online.target"] and "network-online.target" in unit["After"][0].split()
    assert safe["Restart"] == ["always"] and "OnFailure" not in safe and "WantedBy" not in safe
    assert safe["ExecStart"] == ["/opt/sunlit/venv/bin/sunlit-flight run --config /run/sunlit/agent-safe.toml"]
    assert any("sunlit-safe-config /etc/sunlit/agent.toml" in line for line in safe["ExecStartPre"])
    # Same user, resources and sandbox: the fallback must not be a different machine.
    differ = {"Description", "ExecStart", "ExecStartPre", "Restart", "RestartSec", "SyslogIdentifier", "OnFailure",
              "StartLimitIntervalSec", "StartLimitBurst", "Conflicts", "WantedBy", "After"}
    for key in set(agent) | set(safe):
        if key not in differ:
            assert agent.get(key) == safe.get(key), key


def systemd_after_exit(unit: dict[str, list[str]], status: int) -> tuple[str, bool]:
    """What systemd does when a unit's main process exits with ``status`` on its own (not by
    systemctl stop, which never restarts): (the unit's result, whether it is restarted).
    systemd.service(5): RestartPreventExitStatus= wins over RestartForceExitStatus=, which wins
    over Restart=; SuccessExitStatus= makes a status clean, as 0 is."""
    def listed(key: str) -> set[int]:
        return {int(v) for line in unit.get(key, []) for v in line.split() if v.isdigit()}

    clean = status == 0 or status in listed("SuccessExitStatus")
    result = "success" if clean else "exit-code"
    if status in listed("RestartPreventExitStatus"):
        return result, False
    if status in listed("RestartForceExitStatus"):
        return result, True
    restart = unit["Restart"][0]
    return result, restart == "always" or (restart == "on-failure" and not clean)


def test_units_act_on_the_agents_exit_status():
    """SHUTDOWN then=RESTART_SAFE exits 75: started again (in SAFE, as every start), and not a
    failure (no OnFailure=); then=STAY_DOWN, or SIGTERM, exits 0: down until the next boot, in
    the SAFE fallback too (Restart=always); a config error (2) or a crash (1): restarted."""
    from flight.agent.executive import EXIT_RESTART_SAFE, EXIT_STAY_DOWN

    assert (EXIT_RESTART_SAFE, EXIT_STAY_DOWN) == (75, 0)
    for name in ("sunlit-agent.service", "sunlit-safe.service"):
        unit = unit_settings(name)
        assert unit["SuccessExitStatus"] == ["75"] and unit["RestartForceExitStatus"] == ["75"], name
        assert unit["RestartPreventExitStatus"] == ["0"], name
        assert systemd_after_exit(unit, EXIT_RESTART_SAFE) == ("success", True), name
        assert systemd_after_exit(unit, EXIT_STAY_DOWN) == ("success", False), name
        assert systemd_after_exit(unit, 2) == ("exit-code", True) and systemd_after_exit(unit, 1) == ("exit-code", True)
    # Without the settings, the plain Restart= lines would do the wrong thing: that is why they are there.
    assert systemd_after_exit({"Restart": ["always"]}, 0) == ("success", True)
    assert systemd_after_exit({"Restart": ["on-failure"]}, 75) == ("exit-code", True)  # a "failure": OnFailure=


def test_journald_dropin_caps_the_journal():
    parser = configparser.ConfigParser(strict=True)
    parser.optionxform = str
    parser.read(DEPLOY / "systemd/journald.conf.d/sunlit.conf")
    journal = dict(parser["Journal"])
    known = {"Storage", "Compress", "SystemMaxUse", "SystemKeepFree", "SystemMaxFileSize", "MaxRetentionSec",
             "RuntimeMaxUse"}  # journald.conf(5); rate limits are per unit (LogRateLimit*=), not system-wide
    assert set(journal) <= known and parser.sections() == ["Journal"]
    assert re.fullmatch(r"\d+[KMG]", journal["SystemMaxUse"])


# --- udev ------------------------------------------------------------------------------------------

# udev(7): match keys, assignment keys, and those that take {attribute}.
_MATCH = {"ACTION", "DEVPATH", "KERNEL", "KERNELS", "NAME", "SYMLINK", "SUBSYSTEM", "SUBSYSTEMS", "DRIVER",
          "DRIVERS", "ATTR", "ATTRS", "SYSCTL", "ENV", "CONST", "TAG", "TAGS", "TEST", "PROGRAM", "RESULT"}
_ASSIGN = {"NAME", "SYMLINK", "OWNER", "GROUP", "MODE", "SECLABEL", "ATTR", "SYSCTL", "ENV", "TAG", "RUN", "LABEL",
           "GOTO", "IMPORT", "OPTIONS"}
_TOKEN = re.compile(r'\s*([A-Z_]+)(?:\{([^}]*)\})?\s*(==|!=|\+=|-=|:=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def parse_udev_rules(text: str) -> list[list[tuple[str, str | None, str, str]]]:
    """A small udev rules parser: (key, attribute, operator, value) per token, per rule line.
    Raises ValueError naming the line for anything udev would reject."""
    rules = []
    labels, gotos = set(), []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pos, tokens = 0, []
        while pos < len(line):
            m = _TOKEN.match(line, pos)
            if not m:
                raise ValueError(f"line {n}: cannot parse at {line[pos:]!r}")
            key, attr, op, value = m.groups()
            is_match = op in ("==", "!=")
            if key not in (_MATCH if is_match else _ASSIGN):
                raise ValueError(f"line {n}: {key} {op} is not a udev {'match' if is_match else 'assignment'}")
            if key in ("ATTR", "ATTRS", "ENV", "SYSCTL") and not attr:
                raise ValueError(f"line {n}: {key} needs {{attribute}}")
            if key == "MODE" and not re.fullmatch(r"0?[0-7]{3}", value):
                raise ValueError(f"line {n}: MODE {value!r} is not octal")
            if key == "LABEL":
                labels.add(value)
            if key == "GOTO":
                gotos.append((n, value))
            tokens.append((key, attr, op, value))
            pos = m.end()
        rules.append(tokens)
    for n, target in gotos:
        if target not in labels:
            raise ValueError(f"line {n}: GOTO {target!r} has no LABEL")
    return rules


def test_udev_rule_parses_and_covers_the_adapters():
    rules = parse_udev_rules((DEPLOY / "udev/99-sunlit-link.rules").read_text())
    ids = set()
    for tokens in rules:
        d = {(k, a): v for k, a, _op, v in tokens}
        vendor, product = d.get(("ATTRS", "idVendor")), d.get(("ATTRS", "idProduct"))
        if vendor:
            ids |= {f"{vendor}:{p}" for p in product.split("|")}
    assert ids == {"0403:6001", "0403:6014", "0403:6015", "10c4:ea60", "1a86:7523", "067b:2303"}
    symlinks = [tokens for tokens in rules if ("SYMLINK", None, "+=", "sunlit-link") in tokens]
    assert len(symlinks) == 2  # the USB adapters and the Jetson UART
    for tokens in symlinks:
        assert ("GROUP", None, "=", "dialout") in tokens and ("MODE", None, "=", "0660") in tokens
    assert ("KERNEL", None, "==", "ttyTHS0") in symlinks[0]


def test_the_small_parser_rejects_what_udev_rejects():
    for bad in ('BOGUS{x}=="y"', 'KERNEL="tty0"x', 'GOTO="nowhere"', 'MODE="rw"', 'ATTRS=="x"', 'GROUP=="dialout"'):
        with pytest.raises(ValueError):
            parse_udev_rules(bad)


def udevadm_test(tmp_path: Path, rule_text: str, device: str = "/sys/class/tty/tty0") -> str:
    """`udevadm test` of ``rule_text`` alone, in a private mount namespace: /dev, /run and the
    rules directories are throw-away there, so the test cannot touch this machine's devices."""
    udevadm, unshare = shutil.which("udevadm"), shutil.which("unshare")
    if udevadm is None:
        pytest.skip("udevadm is not installed (apt-get install udev); the rule is still checked by the parser")
    if unshare is None or os.geteuid() != 0 or not Path(device).exists():
        pytest.skip("needs root, unshare and a tty device to run udevadm test in a private mount namespace")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "99-sunlit-link.rules").write_text(rule_text)
    script = (f"mount -t tmpfs none /dev && mount -t tmpfs none /run && mount --bind {rules} /etc/udev/rules.d && "
              f"mount -t tmpfs none /usr/lib/udev/rules.d && exec {udevadm} test --action=add {device}")
    proc = subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 and "Reading rules file" not in proc.stdout + proc.stderr:
        # unshare or a mount refused (a container without CAP_SYS_ADMIN): not udevadm's verdict
        pytest.skip(f"cannot make a private mount namespace here: {proc.stderr.strip()[:200]}")
    assert "Reading rules file: /etc/udev/rules.d/99-sunlit-link.rules" in proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_udevadm_reads_the_rule_without_complaint(tmp_path):
    out = udevadm_test(tmp_path, (DEPLOY / "udev/99-sunlit-link.rules").read_text())
    complaints = [line for line in out.splitlines() if line.startswith("/etc/udev/rules.d/99-sunlit-link.rules:")]
    assert complaints == [] and "DEVLINKS=/dev/sunlit-link" not in out  # tty0 is neither an adapter nor the UART


def test_udevadm_gives_the_uart_its_link_group_and_mode(tmp_path):
    # The Jetson line, pointed at a tty every machine has, shows what a ttyTHS gets.
    text = (DEPLOY / "udev/99-sunlit-link.rules").read_text().replace('KERNEL=="ttyTHS0"', 'KERNEL=="tty0"')
    out = udevadm_test(tmp_path, text)
    dialout = grp.getgrnam("dialout").gr_gid
    assert "DEVLINKS=/dev/sunlit-link" in out and "ID_MM_DEVICE_IGNORE=1" in out
    assert re.search(rf"99-sunlit-link.rules:\d+ GROUP {dialout}\b", out) and re.search(r"99-sunlit-link.rules:\d+ MODE 0660", out)


def test_udevadm_would_catch_a_mistake(tmp_path):
    out = udevadm_test(tmp_path, 'SUBSYSTEM=="tty", BOGUS{x}=="y", SYMLINK+="sunlit-link"\n')
    assert re.search(r"99-sunlit-link.rules:1 Invalid key 'BOGUS'", out), out


# --- helpers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("conf", sorted(p.name for p in FIXTURES.glob("nvpmodel_*.conf")))
def test_power_access_grants_exactly_what_nvpmodel_writes(tmp_path, conf):
    text = (FIXTURES / conf).read_text()
    paths = list(parse_nvpmodel_conf(text).param_paths)
    assert paths and all(p.startswith("/sys/") for p in paths)
    root = tmp_path / "root"
    for p in paths[:-1]:  # the last one absent, as a knob on a module variant without it
        (root / p.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / p.lstrip("/")).write_text("1\n")
        (root / p.lstrip("/")).chmod(0o644)
    (root / "etc").mkdir()
    (root / "etc/nvpmodel.conf").write_text(text)
    (root / "var/lib/nvpmodel").mkdir(parents=True)
    group = grp.getgrgid(os.getgid()).gr_name
    helper = str(DEPLOY / "libexec/sunlit-power-access")
    dry = subprocess.run(["sh", helper, "--root", str(root), "--group", group, "--dry-run"],
                         capture_output=True, text=True, check=True).stdout
    granted = [line.split(" && ")[0].split()[-1] for line in dry.splitlines() if line.startswith("would: chgrp")]
    assert granted == [str(root / p.lstrip("/")) for p in paths[:-1]] + [str(root / "var/lib/nvpmodel")]
    assert all(mode(root / p.lstrip("/")) == 0o644 for p in paths[:-1])  # a dry run changes nothing
    out = subprocess.run(["sh", helper, "--root", str(root), "--group", group], capture_output=True, text=True,
                         check=True).stdout
    assert f"group {group} may write {len(paths)} files nvpmodel uses (1 named in" in out
    assert all(mode(root / p.lstrip("/")) == 0o664 for p in paths[:-1])


@pytest.mark.req("DEP-007")
def test_a_conf_that_comes_back_under_a_running_agent_is_granted_again(tmp_path):
    """A Jetson runs without /etc/nvpmodel.conf on its board profile's modes, and takes the conf's once it comes back
    (a JetPack update, an operator restoring it); the grant ran at the unit's start, when there was no conf, and
    nothing ran it again: every mode set was POWER_MODE_FAILED until a restart. sunlit-power-access.path starts
    the same grant, as root, when the conf appears or changes; here the service's own command runs on a board's
    tree before and after the conf appears."""
    watch, service = unit_settings("sunlit-power-access.path"), unit_settings("sunlit-power-access.service")
    agent = unit_settings("sunlit-agent.service")
    assert watch["PathChanged"] == ["/etc/nvpmodel.conf"] and watch["Unit"] == ["sunlit-power-access.service"]
    assert watch["WantedBy"] == ["multi-user.target"]
    assert service["Type"] == ["oneshot"] and "User" not in service and "WantedBy" not in service  # root, on demand
    # The very grant the agent's units run as they start (ExecStartPre=+, as root).
    assert [f"+{service['ExecStart'][0]}"] == [line for line in agent["ExecStartPre"] if "sunlit-power-access" in line]
    text = (FIXTURES / "nvpmodel_orin_nx_16gb.conf").read_text()
    files = [tmp_path / p.lstrip("/") for p in parse_nvpmodel_conf(text).param_paths]
    status = tmp_path / "var/lib/nvpmodel/status"
    for f in [*files, status]:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("1\n")
        f.chmod(0o644)
    status.parent.chmod(0o755)
    exe, *args = service["ExecStart"][0].split()
    assert exe == "/opt/sunlit/libexec/sunlit-power-access" and args == ["--group", "sunlit"]
    group = grp.getgrgid(os.getgid()).gr_name  # this machine has no group sunlit: the last --group wins

    def run_the_service() -> str:
        return subprocess.run(["sh", str(DEPLOY / "libexec/sunlit-power-access"), *args, "--root", str(tmp_path),
                               "--group", group], capture_output=True, text=True, check=True).stdout

    assert "nothing to do" in run_the_service()  # the agent's start, with no conf
    assert all(mode(f) == 0o644 for f in [*files, status])
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nvpmodel.conf").write_text(text)  # it comes back: the path unit starts the service
    assert f"group {group} may write {len(files) + 2} files nvpmodel uses (0 named" in run_the_service()
    assert all(mode(f) == 0o664 for f in [*files, status]) and mode(status.parent) == 0o775


def test_power_access_on_a_pc_does_nothing(tmp_path):
    out = subprocess.run(["sh", str(DEPLOY / "libexec/sunlit-power-access"), "--root", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    assert "not a Jetson" in out


def test_push_dry_run_prints_rsync_and_remote_install(tmp_path):
    proc = run_script(DEPLOY / "push.sh", "orin.local", "--user", "ops", "--dry-run", "--",
                      "--link", "serial:///dev/sunlit-link?baud=115200")
    out = proc.stdout
    assert out.startswith("dry run: would run")
    check, rsync, ssh = [line.strip() for line in out.splitlines()[1:4]]
    assert check.startswith("ssh ops@orin.local d=sunlit-src")
    assert rsync.startswith("rsync -az --delete") and rsync.endswith(f"{REPO}/ ops@orin.local:sunlit-src/")
    for excluded in ("/.venv", "/.git", "/reports", "/var", "/etc", "/runs", "\\*.key", "\\*.key_secret"):
        assert f"--exclude={excluded} " in rsync
    assert ssh.startswith("ssh -t ops@orin.local sudo\\ bash\\ sunlit-src/deploy/install.sh\\ --source\\ sunlit-src")
    assert "serial:///dev/sunlit-link" in ssh
    assert "--exclude=/.sunlit-push " in rsync  # --delete leaves the marker alone
    assert run_script(DEPLOY / "push.sh", check=False).returncode == 2


def test_an_option_where_a_value_belongs_is_refused_not_taken_as_the_value():
    """`push.sh HOST --user --dry-run` once took --dry-run as the user, and ran for real; install.sh's
    `--link --dry-run` installed for real with the link "--dry-run". OPT=VALUE still takes any value."""
    for script, argv, said in ((DEPLOY / "push.sh", ("orin.local", "--user", "--dry-run"), "--user needs a value, "
                                "not the option --dry-run"),
                               (DEPLOY / "push.sh", ("orin.local", "--dir", "-x", "--dry-run"), "--dir needs a value, "
                                "not the option -x"),
                               (INSTALL, ("--link", "--dry-run"), "--link needs a value, not the option --dry-run")):
        proc = run_script(script, *argv, check=False)
        assert proc.returncode == 2 and said in proc.stderr, proc.stdout + proc.stderr
        assert "would run" not in proc.stdout
    proc = run_script(DEPLOY / "push.sh", "orin.local", "--user=-odd", "--dry-run")
    assert "-odd@orin.local" in proc.stdout


@pytest.mark.parametrize("bad", [".", "..", "~", "/", "a/../b", "./x", "/home/ops", "~other", "/home/ops//",
                                 "//home//ops", "/home//ops/"])
def test_push_refuses_a_dir_rsync_delete_would_empty(bad):
    proc = run_script(DEPLOY / "push.sh", "orin.local", "--dir", bad, "--dry-run", check=False)
    assert proc.returncode == 2 and "--dir" in proc.stderr and "would run" not in proc.stdout


def test_push_refuses_a_dir_under_another_users_home_saying_why():
    """~USER/x was refused as if it named the home itself; the guard (quoted), rsync and the remote shell
    would each read it their own way."""
    proc = run_script(DEPLOY / "push.sh", "orin.local", "--dir", "~ops/sunlit-src", "--dry-run", check=False)
    assert proc.returncode == 2 and "would run" not in proc.stdout
    assert proc.stderr == ("push.sh: --dir ~ops/sunlit-src: ~USER is not taken; give the directory relative to the "
                           "home push.sh logs in to (e.g. sunlit-src, with --user USER), or absolute\n")
    assert "d=sunlit-src" in run_script(DEPLOY / "push.sh", "orin.local", "--dir", "~/sunlit-src", "--dry-run").stdout


def test_push_guard_on_the_board_refuses_a_foreign_directory(tmp_path):
    """The command push.sh runs over ssh before rsync --delete, run here in a fake home."""
    import shlex

    def guard_for(directory: str) -> subprocess.CompletedProcess:
        out = run_script(DEPLOY / "push.sh", "orin.local", "--dir", directory, "--dry-run").stdout
        command = shlex.split(out.splitlines()[1])[2]  # ssh HOST COMMAND
        return subprocess.run(["sh", "-c", command], cwd=tmp_path, capture_output=True, text=True)

    assert guard_for("sunlit-src").returncode == 0 and (tmp_path / "sunlit-src/.sunlit-push").exists()
    assert guard_for("sunlit-src").returncode == 0  # ours: pushed to again
    (tmp_path / "empty").mkdir()
    assert guard_for("empty").returncode == 0
    (tmp_path / "work").mkdir()
    (tmp_path / "work/thesis.tex").write_text("years of it")
    refused = guard_for("work")
    assert refused.returncode == 3 and "not empty and not from push.sh" in refused.stderr
    assert (tmp_path / "work/thesis.tex").exists() and not (tmp_path / "work/.sunlit-push").exists()


def test_shell_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed; bash -n only")
    scripts = [DEPLOY / n for n in ("install.sh", "uninstall.sh", "push.sh", "libexec/sunlit-power-access")]
    proc = subprocess.run([shellcheck, "-S", "warning", *map(str, scripts)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_shell_scripts_parse():
    for script in ("install.sh", "uninstall.sh", "push.sh"):
        subprocess.run(["bash", "-n", str(DEPLOY / script)], check=True)
    subprocess.run(["sh", "-n", str(DEPLOY / "libexec/sunlit-power-access")], check=True)


@pytest.mark.req("GND-024")
def test_ground_unit_keeps_to_paths_apart_from_the_boards():
    """Found in audit: the ground server ran from /opt/sunlit/venv with its config in /etc/sunlit, the board's paths:
    on a desk or HIL machine running both, install.sh made /etc/sunlit root:sunlit 0750 (the ground server's user
    could read its config no more) and uninstall.sh removed the ground's venv with the board's."""
    ground = unit_settings("sunlit-ground.service")
    board = ("/opt/sunlit/", "/etc/sunlit/", "/var/lib/sunlit/")
    named = [word for key in ("ExecStart", "ReadWritePaths", "WorkingDirectory", "Documentation")
             for line in ground.get(key, []) for word in line.replace("file://", "").split() if "/" in word]
    assert any(w.startswith("/opt/sunlit-ground/") for w in named) and any(w.startswith("/etc/sunlit-ground/")
                                                                            for w in named)
    assert not [w for w in named if w.startswith(board)], named
