#!/usr/bin/env python3
"""Dump what Sunlit's Jetson HAL reads from a board, as a fixture the test suite can load.

Run it ON the board (Python standard library only; ``tegrastats`` and ``nvpmodel`` if there)::

    python3 deploy/dump_board.py --out orin_nx_16gb-mine.tar.gz
    sudo python3 /opt/sunlit/share/dump_board.py --out /tmp/board.tar.gz    # some files need root

and copy the result into ``tests/fixtures/boards/`` of the checkout:
tests/test_deploy_fixtures.py then restores every fixture there into a temporary tree and
checks that the Jetson HAL reads from it exactly what the board showed (the raw values are
kept in ``expected.json``, independent of the HAL's code).

A fixture (a directory, or the same as a ``.tar.gz``)::

    meta.json        format, model string, L4T release, kernel, what was skipped and why
    expected.json    the raw values read: zone type and millidegrees per thermal zone,
                     label, mV and mA per INA3221 channel
    nvpmodel-q.txt   the output of ``nvpmodel -q`` (if nvpmodel ran)
    tegrastats.txt   one tegrastats line (if tegrastats ran)
    root/            the files the HAL reads, at their paths:
        proc/device-tree/model, proc/stat, proc/meminfo
        sys/class/thermal/thermal_zone*/{type,temp}
        sys/bus/i2c/drivers/ina3221/<bus-addr>/hwmon/hwmon*/{name,in*_label,in*_input,curr*_input,...}
        etc/nvpmodel.conf, var/lib/nvpmodel/status

Nothing that identifies the unit (serial numbers, MAC addresses, host name) is copied.
A file that could not be read on the board (an I/O error) becomes an empty *directory*
in the fixture, so reading it fails again when the fixture is restored, and ``meta.json``
says what the original error was; a file that read empty stays an empty file.

:func:`restore` is the loader: it puts a fixture's tree under a directory of your choice
and adds a stand-in ``nvpmodel`` that answers ``-q`` with the recorded output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

FORMAT = 1
MODEL_PATHS = ("proc/device-tree/model", "sys/firmware/devicetree/base/model")
THERMAL = "sys/class/thermal"
INA3221 = "sys/bus/i2c/drivers/ina3221"
# hwmon attributes of the INA3221 worth keeping; symlinks (device, subsystem) and power/ are not.
_HWMON_FILE = re.compile(r"^(name|update_interval|samples|(in|curr|shunt)\d+_(label|input|crit|max|alarm|crit_alarm|max_alarm|resistor|enable))$")
_ZONE = re.compile(r"^thermal_zone\d+$")
TEGRASTATS_TIMEOUT_S = 5.0


def detect_orin(model: str) -> bool:
    """The model strings flight.hal.jetson.detect_board knows (this script runs without Sunlit)."""
    text = " ".join(model.replace("\0", " ").split()).lower()
    return any(needle in text for needle in ("agx orin", "orin nx", "orin nano"))


class Dumper:
    """Copies files from ``root`` (the board, "/") into ``out/root``, remembering what failed."""

    def __init__(self, root: Path, out: Path):
        self.root = root
        self.out = out
        self.skipped: list[str] = []

    def copy(self, rel: str) -> bytes | None:
        """Copy one file; its bytes, or None if it could not be read (then an empty dir stands in)."""
        src = self.root / rel
        dest = self.out / "root" / rel
        try:
            data = src.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.skipped.append(f"{rel}: {exc.strerror or type(exc).__name__} (replayed as unreadable)")
            dest.mkdir(parents=True, exist_ok=True)
            return None
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        return data

    def thermal(self) -> dict[str, Any]:
        zones: dict[str, Any] = {}
        base = self.root / THERMAL
        names = sorted((p.name for p in base.glob("thermal_zone*") if _ZONE.match(p.name)), key=lambda n: int(n[12:]))
        for name in names:
            zone_type = self.copy(f"{THERMAL}/{name}/type")
            temp = self.copy(f"{THERMAL}/{name}/temp")
            zones[name] = {
                "type": zone_type.decode(errors="replace").strip() if zone_type is not None else None,
                "temp": temp.decode(errors="replace").strip() if temp is not None else None,
            }
        return zones

    def rails(self) -> dict[str, Any]:
        rails: dict[str, Any] = {}
        base = self.root / INA3221
        for dev in sorted(p for p in base.glob("*-*") if p.is_dir()):
            self.copy(f"{INA3221}/{dev.name}/name")
            for hw in sorted(dev.glob("hwmon/hwmon*")):
                rel_hw = f"{INA3221}/{dev.name}/hwmon/{hw.name}"
                copied: dict[str, bytes | None] = {}
                for f in sorted(hw.iterdir()):
                    if _HWMON_FILE.match(f.name) and f.is_file() and not f.is_symlink():
                        copied[f.name] = self.copy(f"{rel_hw}/{f.name}")
                # What the fixture should read back: the bytes copied, not a second read of a
                # live current that has moved on since.
                for ch in (1, 2, 3):
                    rails[f"{dev.name}/in{ch}"] = {
                        "label": _strip(copied.get(f"in{ch}_label")),
                        "voltage_mv": _strip(copied.get(f"in{ch}_input")),
                        "current_ma": _strip(copied.get(f"curr{ch}_input")),
                    }
        return rails


def _strip(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode().strip()
    except UnicodeDecodeError:
        return None


def _text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _run(cmd: list[str], timeout_s: float = 10.0) -> tuple[str | None, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{' '.join(cmd)}: {exc}"
    if proc.returncode != 0:
        return None, f"{' '.join(cmd)}: exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:200]}"
    return proc.stdout, ""


def tegrastats_line(exe: str, timeout_s: float = TEGRASTATS_TIMEOUT_S) -> tuple[str | None, str]:
    """The first line tegrastats prints (it prints one per interval until stopped)."""
    try:
        proc = subprocess.Popen([exe, "--interval", "500"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL)
    except OSError as exc:
        return None, f"{exe}: {exc}"
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                return None, f"{exe}: no line within {timeout_s:g} s"
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                return None, f"{exe}: exited without a line"
            buf += chunk
        return buf.split(b"\n", 1)[0].decode(errors="replace").strip(), ""
    finally:
        proc.kill()
        proc.wait()


def dump(root: Path, out: Path, *, nvpmodel: str | None = "nvpmodel", tegrastats: str | None = "tegrastats",
         name: str | None = None) -> dict[str, Any]:
    """Write a fixture directory ``out`` from the board at ``root``; returns its meta.json body."""
    if out.exists():
        raise FileExistsError(f"{out} exists; give a new path")
    out.mkdir(parents=True)
    d = Dumper(root, out)
    model_raw = None
    for rel in MODEL_PATHS:
        model_raw = d.copy(rel)
        if model_raw is not None:
            break
    model = model_raw.replace(b"\0", b"").decode(errors="replace").strip() if model_raw else None
    zones = d.thermal()
    rails = d.rails()
    for rel in ("etc/nvpmodel.conf", "var/lib/nvpmodel/status", "proc/stat", "proc/meminfo"):
        d.copy(rel)
    notes: list[str] = []
    if model is None or not detect_orin(model):
        notes.append(f"model {model!r}: not an Orin the HAL has a profile for")
    if not zones:
        notes.append(f"no thermal zones under {root / THERMAL}")
    if not rails:
        notes.append(f"no INA3221 hwmon channels under {root / INA3221}")
    if nvpmodel:
        text, why = _run([nvpmodel, "-q"])
        if text is not None:
            (out / "nvpmodel-q.txt").write_text(text)
        else:
            notes.append(why)
    if tegrastats:
        line, why = tegrastats_line(tegrastats)
        if line is not None:
            (out / "tegrastats.txt").write_text(line + "\n")
        else:
            notes.append(why)
    l4t = _text(root / "etc/nv_tegra_release")
    meta = {
        "format": FORMAT,
        "name": name or out.name.split(".")[0],
        "model": model,
        "l4t_release": l4t.splitlines()[0] if l4t else None,
        "kernel": platform.release() if str(root) == "/" else None,
        "dumped_by": "deploy/dump_board.py",
        "dumped_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "skipped": d.skipped,
        "notes": notes,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "expected.json").write_text(json.dumps({"thermal_zones": zones, "ina3221": rails}, indent=2) + "\n")
    return meta


def _pack(directory: Path, tarball: Path) -> None:
    """Written beside ``tarball`` and renamed over it once whole (found in audit: a full disk left a truncated
    .tar.gz, which the next run refused as existing and a test could not open)."""
    part = tarball.with_name(f".{tarball.name}.part")
    try:
        with open(part, "wb") as f:
            with tarfile.open(fileobj=f, mode="w:gz") as tar:
                for path in sorted(directory.rglob("*")):
                    tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, tarball)
    finally:
        part.unlink(missing_ok=True)


# --- loading (used by tests/test_deploy_fixtures.py) ------------------------------------------

FAKE_NVPMODEL = '''#!{python}
"""Stand-in nvpmodel written by deploy/dump_board.py's restore(): replays a board's `nvpmodel -q`."""
import sys
from pathlib import Path

RECORDED = Path({recorded!r})
if sys.argv[1:] == ["-q"]:
    sys.stdout.write(RECORDED.read_text())
    sys.exit(0)
print("NVPM ERROR: a recorded board fixture cannot change power modes", file=sys.stderr)
sys.exit(1)
'''


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = []
    for m in tar.getmembers():
        parts = Path(m.name).parts
        if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()):
            raise ValueError(f"fixture member {m.name!r}: only relative files and directories are allowed")
        members.append(m)
    return members


def restore(fixture: Path | str, dest: Path | str) -> dict[str, Any]:
    """Put a fixture (directory or .tar.gz) under ``dest``; returns what a test needs:
    ``root`` (the tree for the HAL), ``nvpmodel`` (the stand-in, or None), ``meta``,
    ``expected`` and ``tegrastats`` (the recorded line or None)."""
    fixture, dest = Path(fixture), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if fixture.is_file():
        unpacked = dest / "fixture"
        with tarfile.open(fixture, "r:gz") as tar:
            members = _safe_members(tar)
            if sys.version_info >= (3, 12) or hasattr(tarfile, "data_filter"):
                tar.extractall(unpacked, members=members, filter="data")
            else:  # pragma: no cover - older Pythons without extraction filters
                tar.extractall(unpacked, members=members)
        fixture = unpacked
    root = dest / "root"
    shutil.copytree(fixture / "root", root, dirs_exist_ok=True)
    nvpmodel = None
    recorded = fixture / "nvpmodel-q.txt"
    if recorded.is_file():
        nvpmodel = root / "usr" / "sbin" / "nvpmodel"
        nvpmodel.parent.mkdir(parents=True, exist_ok=True)
        nvpmodel.write_text(FAKE_NVPMODEL.format(python=sys.executable, recorded=str(recorded.resolve())))
        nvpmodel.chmod(0o755)
    tegra = fixture / "tegrastats.txt"
    return {
        "root": root,
        "nvpmodel": nvpmodel,
        "meta": json.loads((fixture / "meta.json").read_text()),
        "expected": json.loads((fixture / "expected.json").read_text()),
        "tegrastats": tegra.read_text().strip() if tegra.is_file() else None,
        "fixture": fixture,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="fixture to write: a new directory, or FILE.tar.gz")
    parser.add_argument("--root", default="/", help="the board's filesystem root (default /)")
    parser.add_argument("--name", help="fixture name for meta.json (default: from --out)")
    parser.add_argument("--nvpmodel", default="nvpmodel", help="nvpmodel executable (default: from PATH)")
    parser.add_argument("--tegrastats", default="tegrastats", help="tegrastats executable (default: from PATH)")
    parser.add_argument("--no-nvpmodel", action="store_true", help="do not run nvpmodel -q")
    parser.add_argument("--no-tegrastats", action="store_true", help="do not run tegrastats")
    args = parser.parse_args(argv)
    out = Path(args.out)
    nvpmodel = None if args.no_nvpmodel else args.nvpmodel
    tegrastats = None if args.no_tegrastats else (shutil.which(args.tegrastats) or args.tegrastats)
    try:
        if out.name.endswith((".tar.gz", ".tgz")):
            if out.exists():
                raise FileExistsError(f"{out} exists; give a new path")
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp) / out.name.split(".")[0]
                meta = dump(Path(args.root), work, nvpmodel=nvpmodel, tegrastats=tegrastats, name=args.name)
                _pack(work, out)
        else:
            meta = dump(Path(args.root), out, nvpmodel=nvpmodel, tegrastats=tegrastats, name=args.name)
    except (OSError, ValueError) as exc:
        print(f"dump_board.py: {exc}", file=sys.stderr)
        return 2
    print(f"dump_board.py: wrote {out} (model {meta['model']!r}; {len(meta['skipped'])} unreadable files, "
          f"notes: {'; '.join(meta['notes']) or 'none'})")
    print("copy it into tests/fixtures/boards/ of the checkout; tests/test_deploy_fixtures.py loads it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
