"""Campaigns: many scenarios from one, as parameter sweeps and Monte Carlo dispersions with seeds.

    sunlit-hil campaign hil/campaigns/sso_battery_sweep.toml --out runs/sweep [--workers N]
    sunlit-hil campaign FILE --out DIR --engine ray [--address head:6379]

A campaign file (TOML) names a base scenario and says how each case differs from it::

    name = "battery-sweep"
    scenario = "../scenarios/sso_one_orbit.toml"   # relative to this file
    cases = 20          # Monte Carlo draws per sweep point (default 1)
    seed = 42           # the campaign's seed: every draw and every case's scenario seed come from it

    [set]               # the same for every case
    duration_s = 600

    [sweep]             # a cartesian product, first key outermost
    "battery.capacity_wh" = [20, 60, 120]

    [dispersion]        # drawn per case
    "battery.soc_initial_pct" = { uniform = [40, 90] }
    "power.platform_load_w" = { normal = [12, 2], clip = [5, 20] }
    board = { choice = ["orin_nx_16gb", "agx_orin_64gb"] }

Keys are dotted paths into the scenario's TOML (``battery.capacity_wh``; a number indexes an
array of tables: ``faults.0.at_s``). Each case is the base scenario's TOML with its keys
replaced, written to ``OUT/cases/NNNN.toml`` and parsed by the scenario loader as a file would
be; the whole campaign is checked before the first case runs, so a typo or a bad value is
exit 2 naming the key, never a failure an hour in.

Seeds, and why the results do not depend on the engine: case ``i`` is sweep point
``i // cases`` with draw ``j = i % cases``. Draw ``j``'s parameters come from
``SeedSequence(seed, spawn_key=(j, 0))`` (what ``SeedSequence(seed).spawn(n)[j]`` is, one
level further down) and its scenario seed from ``spawn_key=(j, 1)``. So a case's parameters
depend on the campaign seed and its own index only — not on the engine, the number of
workers, the order cases finish in, or which ran before a resume — and every sweep point
meets the same draws (common random numbers: differences between sweep points are the
sweep's, not the dice's).

Engines: a local process pool (default) or Ray (``--engine ray``), both calling
:func:`run_case` with the same job, so the same seeds give the same result rows (wall-clock
fields aside). Ray is optional: it is imported only when asked for. On a cluster of several nodes, ``OUT`` and the
scenario's files must be on a filesystem every node sees at the same path: a case whose node does not see ``OUT``
(this run's token in it) flies nothing and stops the campaign, naming the folder and the node.

Output (``OUT``): ``manifest.json`` (SHA-256 checked, written atomically as the campaign starts and ends: the
campaign's hash, over the campaign file, its scenario and every case's profile and board profile
file, which it lists; each case's status and row; running the same command again resumes,
running only the cases not finished, and is refused once the hash changed), ``manifest.journal`` (while it runs:
one line per case finished, appended and fsync'd, each with its own SHA-256; folded into the manifest at the end
and at a resume, so a case costs the bytes of its own row, not a rewrite of every row before it), ``cases/NNNN.toml``
and ``cases/NNNN/`` (each case's scenario and its report, as ``sunlit-hil run`` writes it),
``results.parquet`` (one row per case: its parameters as columns, then its figures) and
``report.html`` (the table and histograms of the main figures).

Exit codes: 0 every case passed, 1 some case failed its criteria (or could not run),
2 bad input (the campaign file, its scenario, the output folder), 130 interrupted.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import math
import os
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from flight import toml_text
from flight.storage import ReadRefused, read_limited
from hil.run import CAMPAIGN_MANIFEST, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_PASS, print_out
from hil.scenario import MAX_SCENARIO_BYTES, ScenarioError

MANIFEST_FORMAT = "sunlit-campaign/1"
JOURNAL = "manifest.journal"  # the cases finished since the manifest was last written whole: one checked line each
RUN_REPORT_VERDICTS = ("summary.json", "junit.xml")  # a `sunlit-hil run` report's verdicts (hil/report.py)
RUN_TOKEN = ".campaign.run"  # this run's token, which each case reads to know it sees the campaign's folder
FOLDER_NOT_SEEN = "cannot see the campaign's folder"  # a case's error where its node does not: stops the campaign
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1  # an integers draw's bounds: numpy draws int64
CAMPAIGN_KEYS = ("name", "scenario", "cases", "seed", "set", "sweep", "dispersion")
DISTRIBUTIONS = {
    "uniform": "[low, high]: any value between, equally likely",
    "normal": "[mean, sd]: Gaussian (add clip = [low, high] to keep it physical)",
    "choice": "[a, b, ...]: one of these, equally likely",
    "integers": "[low, high]: a whole number from low to high inclusive",
}
# Result columns a case always has; parameters may not take these names.
RESULT_COLUMNS = ("case", "status", "passed", "seed", "work_tiles", "soc_min_pct", "soc_end_pct",
                  "floor_violation_steps", "temp_max_c", "events", "faults", "sim_s", "wall_s", "error")
WALL_CLOCK_COLUMNS = frozenset({"wall_s"})  # differ between runs of the same case; everything else must not
INSTALL_RAY = "pip install 'sunlit[campaign]'"
MAX_CASES = 10_000
"""Cases one campaign may have (each is a flight, and each is checked when the file is read): past it the
file is refused, naming ``cases`` (100 million once read on, silent, for ever)."""


class CampaignError(ScenarioError):
    """A campaign that cannot run; the message names the file and the key, and says what to do.
    A ScenarioError, so whatever turns bad scenarios into exit 2 does the same for campaigns."""


@dataclass(frozen=True)
class Dispersion:
    kind: str                      # one of DISTRIBUTIONS
    args: tuple[Any, ...]
    clip: tuple[float, float] | None = None

    def draw(self, rng: Any) -> Any:
        if self.kind == "uniform":
            value: Any = float(rng.uniform(self.args[0], self.args[1]))
        elif self.kind == "normal":
            value = float(rng.normal(self.args[0], self.args[1]))
        elif self.kind == "integers":
            value = int(rng.integers(self.args[0], self.args[1], endpoint=True))
        else:
            value = self.args[int(rng.integers(len(self.args)))]
        if self.clip is not None:
            value = min(max(value, self.clip[0]), self.clip[1])
        return value

    def probes(self) -> list[Any]:
        """Values this dispersion can take, to check the scenario reads its key at all."""
        if self.kind == "normal":
            return [self.args[0], self.args[0] + self.args[1]]
        return list(self.args)


@dataclass(frozen=True)
class Case:
    index: int
    params: dict[str, Any]         # the keys that vary between cases (and the scenario seed), as set
    scenario: dict[str, Any]       # the case's whole scenario TOML

    @property
    def name(self) -> str:
        return f"{self.index:04d}"


@dataclass(frozen=True)
class Campaign:
    name: str
    source: Path
    scenario_path: Path
    base: dict[str, Any]           # the base scenario's TOML
    fixed: dict[str, Any]          # [set]: the same in every case
    sweep: dict[str, tuple[Any, ...]]
    dispersion: dict[str, Dispersion]
    draws: int                     # Monte Carlo draws per sweep point
    seed: int | None
    hash: str                      # SHA-256 of the campaign file, the base scenario and every input file a case reads
    inputs: dict[str, str] = field(default_factory=dict)  # those input files: "profile REL" / "board NAME" -> SHA-256

    @property
    def n_cases(self) -> int:
        return math.prod(len(v) for v in self.sweep.values()) * self.draws

    def case(self, index: int) -> Case:
        """Case ``index``, computed from the campaign alone (see the module's note on seeds)."""
        import numpy as np

        if not 0 <= index < self.n_cases:
            raise IndexError(f"case {index} of a campaign of {self.n_cases}")
        point, draw = divmod(index, self.draws)
        params: dict[str, Any] = {}
        # Mixed radix, last key fastest: the same order as itertools.product.
        for key, values in reversed(list(self.sweep.items())):
            point, k = divmod(point, len(values))
            params[key] = values[k]
        params = dict(reversed(list(params.items())))
        if self.dispersion:
            rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(draw, 0)))
            for key in sorted(self.dispersion):  # sorted: the draws do not depend on the file's order
                params[key] = self.dispersion[key].draw(rng)
        if self.seed is not None and not self._sets("seed"):
            params["seed"] = int(np.random.SeedSequence(self.seed, spawn_key=(draw, 1)).generate_state(1)[0])
        scenario = _deep_copy(self.base)
        for key, value in {**self.fixed, **params}.items():
            _set_dotted(scenario, key, value, str(self.source))
        params.setdefault("seed", scenario.get("seed", 0))
        return Case(index, params, scenario)

    def cases(self) -> Iterator[Case]:
        return (self.case(i) for i in range(self.n_cases))

    def _sets(self, key: str) -> bool:
        return key in self.fixed or key in self.sweep or key in self.dispersion


# --- the campaign file ----------------------------------------------------------------------------


def load_campaign(path: Path | str) -> Campaign:
    """Read and check a campaign file and its base scenario; every case is parsed by the scenario
    loader here, so a campaign that loads runs (bad input never waits for case 57)."""
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "Is a directory")  # EISDIR, as open() says it
        text = read_limited(path, MAX_SCENARIO_BYTES)[0]  # bounded, no FIFO waited on (found in audit)
        raw = toml_text.loads(text.decode())
    except FileNotFoundError:
        raise CampaignError(f"{path}: no such campaign file") from None
    except ReadRefused as exc:
        raise CampaignError(f"{path}: no campaign file: {exc}") from None
    except OSError as exc:  # a directory, a file it may not read (found in audit: IsADirectoryError, exit 3)
        raise CampaignError(f"{path}: cannot read the campaign file: {exc.strerror or exc}") from None
    except (toml_text.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CampaignError(f"{path}: not valid TOML: {exc}") from None

    def fail(key: str, message: str) -> CampaignError:
        return CampaignError(f"{path}: {key}: {message}")

    unknown = [k for k in raw if k not in CAMPAIGN_KEYS]
    if unknown:
        raise fail(unknown[0], f"unknown key; a campaign takes {', '.join(CAMPAIGN_KEYS)}")
    if not isinstance(raw.get("scenario"), str):
        raise fail("scenario", "give the base scenario's file, relative to the campaign file")
    scenario_path = (path.parent / raw["scenario"]).resolve()
    try:
        scenario_text = read_limited(scenario_path, MAX_SCENARIO_BYTES)[0]
        base = toml_text.loads(scenario_text.decode())
    except ReadRefused as exc:
        raise fail("scenario", f"{scenario_path}: no scenario file: {exc}") from None
    except OSError:
        raise fail("scenario", f"{scenario_path} cannot be read") from None
    except (toml_text.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise fail("scenario", f"{scenario_path} is not valid TOML: {exc}") from None

    def table(key: str) -> dict[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            raise fail(key, f"must be a table of dotted scenario keys, like [{key}] \"battery.capacity_wh\" = ...")
        return value

    # A key written without quotes (criteria.min_work = 0) is a table to TOML: its keys, dotted, each set on its
    # own (found in audit: set as a whole it replaced the scenario's [criteria], its other checks gone, and a
    # failing case passed). A dispersion's own table (a distribution) and an empty one ([link] on) are values.
    fixed = _dotted(table("set"), lambda v: not v)
    sweep_raw = _dotted(table("sweep"), lambda v: not v)
    disp_raw = _dotted(table("dispersion"), lambda v: not v or any(k in DISTRIBUTIONS or k == "clip" for k in v))
    sweep: dict[str, tuple[Any, ...]] = {}
    for key, values in sweep_raw.items():
        if not isinstance(values, list) or not values:
            raise fail(f"sweep.{key}", f"give a non-empty list of values, got {values!r}")
        sweep[key] = tuple(values)
    dispersion = {key: _parse_dispersion(spec, lambda m, k=key: fail(f"dispersion.{k}", m))
                  for key, spec in disp_raw.items()}
    seen: dict[str, str] = {}
    for where, keys in (("set", fixed), ("sweep", sweep), ("dispersion", dispersion)):
        for key in keys:
            if key in seen:
                raise fail(f"{where}.{key}", f"also in [{seen[key]}]; give each key in one table")
            # A key varied is a column of the results; one [set] gives is not (found in audit: [set] faults = [...]
            # was refused, and a campaign could add no fault to a scenario that had none).
            if key in RESULT_COLUMNS and key != "seed" and where != "set":
                raise fail(f"{where}.{key}", f"is the name of a result column: vary its entries by index "
                                             f"({key}.0...), or give it in [set]")
            seen[key] = where
    draws = raw.get("cases", 1)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise fail("cases", f"give a whole number of Monte Carlo draws, at least 1; got {draws!r}")
    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise fail("seed", f"give a whole number, 0 or more; got {seed!r}")
    if seed is None and (dispersion or draws > 1):
        raise fail("seed", "needed with [dispersion] or cases > 1, so the draws can be repeated")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise fail("name", f"give a name, got {name!r}")
    if not name.isprintable():  # found in audit: reached the terminal as is (an escape, a line saying PASS)
        raise fail("name", f"{name!r}: has a character that is not printable (a control character or a line "
                           "break)"[:300])
    digest = hashlib.sha256()
    for part in (text, scenario_text):
        digest.update(len(part).to_bytes(8, "big") + part)
    campaign = Campaign(name, path, scenario_path, base, fixed, sweep, dispersion, draws, seed, digest.hexdigest())
    if campaign.n_cases > MAX_CASES:
        raise fail("cases", f"{campaign.n_cases} cases ({draws} draws x {campaign.n_cases // draws} sweep "
                            f"points), at most {MAX_CASES}: split the campaign")
    _check_keys(campaign)
    inputs = _input_files([_parse_case(campaign, case) for case in campaign.cases()], path.parent)
    # Found in audit: the hash covered the campaign and scenario texts alone, so a resume after the profile (or a
    # board profile) changed reused the cases flown with the old one.
    for name, sha in sorted(inputs.items()):
        digest.update(f"{len(name)}:{name}={sha}".encode())
    return replace(campaign, hash=digest.hexdigest(), inputs=inputs)


def _input_files(scenarios: list[Any], base: Path) -> dict[str, str]:
    """The files the cases read besides the campaign and its scenario, each with its SHA-256, by a name that does
    not depend on where the tree lies (found in review: absolute paths made a checkout moved or seen from another
    host another campaign): a profile file (resolved as the loader found it) by its path from the campaign file's
    folder, the shipped board profile (flight/hal/boards) by the board's name."""
    from importlib import resources

    paths: dict[str, Path] = {}
    for sc in scenarios:
        if sc.profile is not None:
            profile = Path(sc.profile).resolve()
            paths[f"profile {os.path.relpath(profile, base.resolve())}"] = profile
        board = resources.files("flight.hal.boards") / f"{sc.board}.toml"
        paths[f"board {sc.board}"] = Path(str(board)).resolve()
    out: dict[str, str] = {}
    for name, path in sorted(paths.items()):
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        except OSError as exc:
            raise CampaignError(f"{path}: an input of the campaign's cases cannot be read: "
                                f"{exc.strerror or exc}") from None
        out[name] = digest.hexdigest()
    return out


def _parse_dispersion(spec: Any, fail: Callable[[str], CampaignError]) -> Dispersion:
    if not isinstance(spec, dict):
        raise fail(f"give a table, one of {', '.join(f'{{{k} = {v}}}' for k, v in DISTRIBUTIONS.items())}")
    kinds = [k for k in spec if k in DISTRIBUTIONS]
    extra = [k for k in spec if k not in DISTRIBUTIONS and k != "clip"]
    if extra:
        raise fail(f"{extra[0]}: unknown; give one of {', '.join(DISTRIBUTIONS)} (and optionally clip)")
    if len(kinds) != 1:
        raise fail(f"give exactly one of {', '.join(DISTRIBUTIONS)}")
    kind, args = kinds[0], spec[kinds[0]]
    if not isinstance(args, list) or not args:
        raise fail(f"{kind}: give {DISTRIBUTIONS[kind]}")
    if kind != "choice":
        whole = kind == "integers"
        if len(args) != 2 or not all(_is_number(a) and (not whole or isinstance(a, int)) for a in args):
            raise fail(f"{kind}: give {DISTRIBUTIONS[kind]}; got {args!r}")
        # Bounds the draw can take (found in audit: inf, nan and integers past int64 reached numpy and were an
        # internal error, exit 3, not a refusal naming the key).
        if not all(map(_finite, args)):
            raise fail(f"{kind}: give finite numbers; got {args!r}")
        if whole and not all(INT64_MIN <= a <= INT64_MAX for a in args):
            raise fail(f"{kind}: bounds must fit a 64-bit integer ({INT64_MIN} to {INT64_MAX}); got {args!r}")
        if kind in ("uniform", "integers") and args[0] > args[1]:
            raise fail(f"{kind}: low {args[0]} is above high {args[1]}")
        if kind == "uniform" and not math.isfinite(args[1] - args[0]):
            raise fail(f"uniform: high - low must be a finite number; got {args!r}")
        if kind == "normal" and args[1] < 0:
            raise fail(f"normal: the standard deviation {args[1]} is negative")
    clip = spec.get("clip")
    if clip is not None:
        if kind == "choice" or not (isinstance(clip, list) and len(clip) == 2 and all(map(_is_number, clip))
                                    and clip[0] <= clip[1]):
            raise fail(f"clip: give [low, high] for a {kind} draw; got {clip!r}")
        if kind == "integers" and not all(isinstance(a, int) for a in clip):  # found in audit: drew 2000.5
            raise fail(f"clip: give whole numbers for an integers draw; got {clip!r}")
        clip = (clip[0], clip[1])
    return Dispersion(kind, tuple(args), clip)


def _finite(x: int | float) -> bool:
    """Finite as a float (an int past a float's range, which TOML allows, is not)."""
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _dotted(table: dict[str, Any], is_value: Callable[[dict[str, Any]], bool], prefix: str = "") -> dict[str, Any]:
    """``table`` with the tables in it that are not values (``is_value``) spread into dotted keys."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and not is_value(value):
            out.update(_dotted(value, is_value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _set_dotted(doc: dict[str, Any], key: str, value: Any, source: str) -> None:
    """``doc[a][b][c] = value`` for ``key = "a.b.c"``; tables that are missing are made, arrays are
    indexed by number (``faults.0.at_s``), anything else in the way is an error naming the key."""
    parts = key.split(".")
    if not all(parts):
        raise CampaignError(f"{source}: {key}: not a dotted scenario key (an empty part)")
    node: Any = doc
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        here = ".".join(parts[:depth + 1])
        if isinstance(node, list):
            if not _is_index(part) or int(part) >= len(node):
                raise CampaignError(f"{source}: {key}: the scenario's {'.'.join(parts[:depth])} has "
                                    f"{len(node)} entries; {part!r} is not one of 0..{len(node) - 1}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            elif part not in node and _is_index(parts[depth + 1]):
                raise CampaignError(f"{source}: {key}: the scenario has no {here} to index")
            else:
                node = node.setdefault(part, {})
        else:
            raise CampaignError(f"{source}: {key}: the scenario's {here.rsplit('.', 1)[0]} is a value, not a table")


def _is_index(part: str) -> bool:
    """Whether a dotted key's part indexes an array: ASCII digits only (found in audit: "faults.\u00b2.at_s", a
    superscript two, is a digit to str.isdigit but not to int(): an internal error, exit 3, not the key named)."""
    return part.isascii() and part.isdigit()


def _has_dotted(doc: Any, key: str) -> bool:
    node = doc
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and _is_index(part) and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def _check_keys(campaign: Campaign) -> None:
    """Every key must be one the scenario reads. A key in the base scenario's TOML is; one that is not
    (a default left out of the file, or a typo) must change the scenario the loader builds for at
    least one of the campaign's values — a typo such as ``battery.capacity`` changes nothing."""
    from hil.scenario import ScenarioError, parse_scenario

    src = str(campaign.source)
    candidates: dict[str, list[Any]] = {k: [v] for k, v in campaign.fixed.items()}
    candidates.update({k: list(v) for k, v in campaign.sweep.items()})
    candidates.update({k: d.probes() for k, d in campaign.dispersion.items()})
    # The scenario as its own file says it, first: a fault of its own is named there, with its file (found
    # in use: it was said as the first case's, under the campaign's name), where the first case fails on
    # the same key; a fault the campaign's values cure, or change, is left to the cases.
    try:
        parse_scenario(_deep_copy(campaign.base), str(campaign.scenario_path), base_dir=campaign.scenario_path.parent)
    except ScenarioError as exc:
        if campaign.n_cases and _same_key(_case_error(campaign, campaign.case(0)), exc.key):
            raise CampaignError(f"{exc} (the scenario {campaign.scenario_path.name} that {campaign.source.name} "
                                f"runs)", str(campaign.scenario_path), exc.key) from None
    reference = None  # the scenario under the campaign's name, as the cases are made, to compare them with
    for key, values in candidates.items():
        if _has_dotted(campaign.base, key) or _a_scenario_key(key):
            continue
        if reference is None:
            try:
                reference = parse_scenario(_deep_copy(campaign.base), src, base_dir=campaign.scenario_path.parent)
            except ScenarioError as exc:
                raise CampaignError(f"{campaign.scenario_path}: the base scenario: {exc}") from None
        for value in values:
            doc = _deep_copy(campaign.base)
            _set_dotted(doc, key, value, src)
            try:
                if parse_scenario(doc, src, base_dir=campaign.scenario_path.parent) != reference:
                    break
            except ScenarioError:
                break  # the loader reads it (and _parse_case will say what is wrong with the value)
        else:
            raise CampaignError(f"{src}: {key}: not a key of the scenario {campaign.scenario_path.name} "
                                f"(it is not in the file, and setting it to {values[0]!r} changes nothing); "
                                f"check the spelling against hil/scenario.py")


def _a_scenario_key(key: str) -> bool:
    """Whether ``key`` names a key the scenario loader takes (hil.scenario.TABLE_KEYS, [parameters] the
    dictionary's): one set to its default changes nothing and is still no typo (found in audit: refused)."""
    from flight.link.definitions import DICTIONARY
    from hil.scenario import TABLE_KEYS

    table, _, name = key.rpartition(".")
    if table == "parameters":
        return name in DICTIONARY.parameter_by_name
    return name in TABLE_KEYS.get(table, ())


def _case_error(campaign: Campaign, case: Case) -> ScenarioError | None:
    """What ``case``'s scenario fails on, None where it loads."""
    from hil.scenario import parse_scenario

    try:
        parse_scenario(_deep_copy(case.scenario), str(campaign.source), base_dir=campaign.scenario_path.parent)
    except ScenarioError as exc:
        return exc
    return None


def _same_key(error: ScenarioError | None, key: str | None) -> bool:
    """Whether ``error`` is at ``key`` (both the scenario loader's: ``faults[0].at_s``; None, the whole file)."""
    return error is not None and error.key == key


def _parse_case(campaign: Campaign, case: Case) -> Any:
    from hil.scenario import ScenarioError, parse_scenario

    try:
        return parse_scenario(_deep_copy(case.scenario), f"{campaign.source} case {case.name}",
                              base_dir=campaign.scenario_path.parent)
    except ScenarioError as exc:
        varied = ", ".join(f"{k} = {v!r}" for k, v in case.params.items())
        raise CampaignError(f"{exc} (case {case.index}: {varied})", str(campaign.source),
                            getattr(exc, "key", None)) from None


# --- one case (the same function on every engine) -------------------------------------------------


def _job(campaign: Campaign, case: Case, out: Path, token: str) -> dict[str, Any]:
    """What a worker needs for one case: plain data, so any engine can carry it. Paths are absolute (a Ray
    worker's own folder is not the campaign's), and ``token`` is this run's, in ``out`` (:func:`_folder_unseen`)."""
    out = out.absolute()
    return {"index": case.index, "scenario": case.scenario, "params": case.params,
            "source": str(out / "cases" / f"{case.name}.toml"),
            "base_dir": str(campaign.scenario_path.parent), "report_dir": str(out / "cases" / case.name),
            "out": str(out), "token": token}


def _folder_unseen(job: dict[str, Any]) -> str | None:
    """Why this node does not see the campaign's folder as the campaign wrote it (None where it does): a Ray node
    without the shared filesystem has no such folder, or one of its own by that name (found in review: its cases
    wrote their reports to the node's own disk, and the campaign's report linked to reports it did not have)."""
    out = Path(job["out"])
    try:
        seen = (out / RUN_TOKEN).read_text().strip()
        why = None if seen == job["token"] else "it holds another run's"
    except FileNotFoundError:
        why = "no such folder there" if not out.is_dir() else f"no {RUN_TOKEN} in it"
    except OSError as exc:
        why = f"cannot be read: {exc.strerror or exc}"
    if why is None:
        return None
    return (f"{FOLDER_NOT_SEEN} {out} on node {socket.gethostname()} ({why}): on a Ray cluster every node must see "
            "--out, and the scenario's files, at the same path on a shared filesystem (docs/campaigns.md)")


def _stop_if_folder_unseen(row: dict[str, Any]) -> None:
    """A case whose node did not see the campaign's folder stops the campaign (exit 2, bad input: the output
    folder): every case that node takes would fail at once the same way, and take the cluster's cases with it."""
    if row["status"] == "error" and str(row.get("error") or "").startswith(FOLDER_NOT_SEEN):
        raise CampaignError(f"case {row['case']}: {row['error']}; the campaign stopped, the cases finished are kept")


def run_case(job: dict[str, Any]) -> dict[str, Any]:
    """Fly one case and return its result row. Runs in a pool worker or a Ray task; never raises:
    a case that cannot run is a row with status "error" and the reason."""
    global _in_case
    row: dict[str, Any] = {**job["params"], "case": job["index"]}
    started = time.monotonic()
    unseen = _folder_unseen(job)
    if unseen is not None:  # nothing flown, nothing written: the node is not set up for the campaign
        return {**row, "status": "error", "passed": False, "error": unseen, "wall_s": 0.0}
    _in_case = True
    try:
        import numpy as np

        from hil.run import run_scenario
        from hil.scenario import parse_scenario

        scenario = parse_scenario(job["scenario"], job["source"], base_dir=Path(job["base_dir"]))
        report_dir = Path(job["report_dir"])
        passed, body = run_scenario(scenario, report_dir, quiet=True)  # as `sunlit-hil run` flies it
        with np.load(report_dir / "trace.npz") as trace:
            soc = trace["soc_pct"]
        floor = scenario.criteria.charge_floor_pct
        row.update({
            "status": "passed" if passed else "failed",
            "passed": bool(passed),
            "work_tiles": float(body["work_tiles"]),
            "soc_min_pct": float(body["soc_min_pct"]),
            "soc_end_pct": float(body["soc_end_pct"]),
            "floor_violation_steps": int((soc < floor).sum()) if floor is not None else None,
            "temp_max_c": float(body["temp_max_c"]),
            "events": int(body["events"]),
            "faults": len(body["faults"]),
            "sim_s": float(body["sim_s"]),
            "error": None,
        })
        for check in body["checks"]:
            row[f"check_{check['name']}"] = bool(check["passed"])
        row.update(_upset_columns(body.get("memory_upsets")))
    except Exception as exc:  # noqa: BLE001 - one case that cannot run must not end the campaign
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        row.update({"status": "error", "passed": False, "error": last[:500]})
    except _Terminated:
        os._exit(128 + signal.SIGTERM)  # the case has unwound (its agent stopped); the campaign is going
    finally:
        _in_case = False
    row["wall_s"] = round(time.monotonic() - started, 3)
    return row


def _crashed_row(job: dict[str, Any], why: str) -> dict[str, Any]:
    """The row of a case whose worker died under it: an error, run again on resume."""
    return {**job["params"], "case": job["index"], "status": "error", "passed": False, "error": why[:500],
            "wall_s": None}


# --- engines ----------------------------------------------------------------------------------------


def run_jobs(fn: Callable[[Any], Any], jobs: list[Any], done: Callable[[Any], None], engine: str = "pool",
             workers: int | None = None, address: str | None = None,
             crashed: Callable[[Any, str], Any] | None = None) -> None:
    """Run ``fn(job)`` for every job on the campaign's engines (a local process pool, or Ray with
    ``engine="ray"``), calling ``done(result)`` as each finishes, in finishing order. ``fn`` must
    be importable by name (it runs in fresh interpreters). The campaigns of scenarios use it, and
    so does ``bench.power`` for its generated cases. ``crashed(job, why)``: the result of a job whose worker
    process died under it (killed, out of memory, a crash in native code), passed to ``done`` as any other
    (found in audit: one such death ended the whole campaign, with no report); None: the death ends the run."""
    if engine not in ("pool", "ray"):
        raise ValueError(f"engine: {engine!r} is not pool or ray")
    workers = max(1, workers or os.cpu_count() or 1)
    if not jobs:
        return
    if engine == "ray":
        _run_ray(fn, jobs, workers, address, done, crashed)
    else:
        remaining, unblamed = list(jobs), [0]
        while remaining:  # a pool a worker's death broke: the jobs it had not begun, in a new one
            remaining = _run_pool(fn, remaining, min(workers, len(remaining)), done, crashed, unblamed)


POOL_BREAKS_WITHOUT_BLAME = 3  # pool deaths with no job seen in flight before every job left is given up


def _run_pool(fn: Callable[[Any], Any], jobs: list[Any], workers: int, done: Callable[[Any], None],
              crashed: Callable[[Any, str], Any] | None = None, unblamed: list[int] | None = None) -> list[Any]:
    """Run ``jobs`` on one pool; the jobs to run again on a new one where a worker's death broke it (those not
    yet begun: the ones in flight, which the death may be of, get ``crashed``)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    # spawn: a fresh interpreter per worker, as a Ray worker is (no threads or sockets inherited). Each job says
    # as it begins (``started``): a worker's death is then blamed on the jobs begun and not finished.
    context = multiprocessing.get_context("spawn")
    started = context.Queue() if crashed is not None else None
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_pool_worker_init,
                               initargs=(started,))
    futures = {pool.submit(_begun, fn, key, job): key for key, job in enumerate(jobs)}
    pending = set(futures)
    reported: set[Any] = set()
    try:
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    result = future.result()
                except BrokenProcessPool as exc:
                    if crashed is None or started is None:
                        raise
                    # Those that finished before the death stand (found in audit: a case flown and passed, its
                    # result in hand but not yet taken, was given the death's error row and flown again on resume).
                    for other in futures:
                        if other not in reported and other.done() and not other.cancelled() \
                                and other.exception() is None:
                            reported.add(other)
                            done(other.result())
                    return _pool_broke(pool, jobs, [futures[f] for f in reported], started, done, crashed, exc,
                                       [0] if unblamed is None else unblamed)
                reported.add(future)
                done(result)
    except BaseException:
        # Interrupted: the cases in flight are abandoned (they run again on resume). Their workers get
        # SIGTERM, which unwinds the case so the loop's own clean-up stops its agent.
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            if proc.is_alive():
                proc.terminate()
        for proc in processes:
            proc.join(timeout=30)
        raise
    pool.shutdown(wait=True)
    return []


def _pool_broke(pool: Any, jobs: list[Any], finished: list[int], started: Any, done: Callable[[Any], None],
                crashed: Callable[[Any, str], Any], exc: BaseException, unblamed: list[int]) -> list[Any]:
    """A worker died and took the pool with it: the jobs begun and not finished get ``crashed`` (the death was
    one of theirs; a campaign's --resume runs them again), those not begun go to a new pool. Where none was seen
    begun, all go again, and after POOL_BREAKS_WITHOUT_BLAME such deaths every one left is given up."""
    import queue

    pool.shutdown(wait=False, cancel_futures=True)
    begun: set[int] = set()
    while True:  # what the workers said as each job began (a moment's wait: a dying worker's last word)
        try:
            begun.add(started.get(timeout=0.5))
        except queue.Empty:
            break
    done_keys = set(finished)
    left = [k for k in range(len(jobs)) if k not in done_keys]
    blamed = [k for k in left if k in begun]
    if not blamed:
        unblamed[0] += 1
        if unblamed[0] >= POOL_BREAKS_WITHOUT_BLAME:
            blamed = left
    why = (f"its worker process died ({type(exc).__name__}: {exc}) while this case or one beside it ran; "
           "run the campaign again to run it again")
    for k in blamed:
        done(crashed(jobs[k], why))
    return [jobs[k] for k in left if k not in blamed]


def _begun(fn: Callable[[Any], Any], key: int, job: Any) -> Any:
    """``fn(job)`` in a pool worker, saying first that job ``key`` has begun (for a death's blame)."""
    if _started is not None:
        _started.put(key)
    return fn(job)


_started: Any = None  # in a pool worker: where it says each job it begins (None: nobody asked)


class _Terminated(BaseException):
    """SIGTERM in a pool worker while it flies a case: unwinds the case (stopping its agent)."""


_in_case = False
ORPHAN_LOOK_S = 1.0  # how often a pool worker looks whether its campaign is still there
ORPHAN_GRACE_S = 30.0  # then how long its case has to unwind (its agent stopped) before the worker exits anyway


def _pool_worker_init(started: Any = None) -> None:
    """In each pool worker: ``started``, where it says each job it begins (for a death's blame); SIGTERM
    unwinds the case in flight, and the worker gets SIGTERM when the
    campaign dies (PR_SET_PDEATHSIG), even by kill -9, so no agent is left flying a dead campaign.

    The first SIGTERM only: the parent-death signal comes once for each thread of the campaign that ends,
    and a second one landed in the case's clean-up before its agent was stopped, or escaped the case into
    the pool's own loop, which went on waiting for work from a campaign that was gone, its agent flying
    (found in audit, after kill -9 of a campaign). And a thread looks at the parent each second: a worker
    whose campaign is gone unwinds its case, and leaves ORPHAN_GRACE_S later whatever it does."""
    import multiprocessing

    global _started
    _started = started
    parent = multiprocessing.parent_process()  # the campaign, as the pool started this worker
    campaign_pid = parent.pid if parent is not None and parent.pid is not None else os.getppid()

    def on_term(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if _in_case:
            raise _Terminated
        os._exit(128 + signum)

    def watch() -> None:
        while os.getppid() == campaign_pid:
            time.sleep(ORPHAN_LOOK_S)
        os.kill(os.getpid(), signal.SIGTERM)  # as the campaign would: the case unwinds, its agent stopped
        time.sleep(ORPHAN_GRACE_S)
        os._exit(128 + signal.SIGTERM)

    import threading

    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=watch, name="campaign-watch", daemon=True).start()  # gone already: at once
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the campaign, which stops the workers
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass  # not Linux: a worker of a killed campaign finishes its case, then finds its queue gone


def _run_ray(fn: Callable[[Any], Any], jobs: list[Any], workers: int, address: str | None,
             done: Callable[[Any], None], crashed: Callable[[Any, str], Any] | None = None) -> None:
    import ray  # checked by main_campaign before anything runs

    started_here = not ray.is_initialized()
    ours = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    if started_here:
        try:
            if address:
                _join_ray(ray, address)
            else:
                # A Ray of this machine only: no dashboard, no usage reporting, the CPUs given.
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                         _node_ip_address="127.0.0.1")
        except SystemExit as exc:  # SIGTERM while Ray starts: its own handler's exit, taken as ours would be
            if exc.code != signal.SIGTERM:
                raise
            ray.shutdown()
            raise KeyboardInterrupt from None
        finally:  # ray.init put its own SIGTERM handler in (found in audit: kill PID gave exit 1 and a native
            if ours is not None:  # stack dump, where the campaign says 130 and how to resume)
                signal.signal(signal.SIGTERM, ours)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(fn)
        job_of = {}
        for job in jobs:
            job_of[task.remote(job)] = job
        pending = list(job_of)
        try:
            while pending:
                finished, pending = ray.wait(pending, num_returns=1)
                for ref in finished:
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # its worker died (run_case itself never raises)
                        if crashed is None:
                            raise
                        result = crashed(job_of[ref], f"its Ray worker failed ({type(exc).__name__}: "
                                                      f"{str(exc)[:200]}); run the campaign again to run it again")
                    done(result)
        except BaseException:
            for ref in pending:
                ray.cancel(ref)  # KeyboardInterrupt in the task: its agent is stopped
            raise
    finally:
        if started_here:
            ray.shutdown()


RAY_CONNECT_TRIES = "1"
"""Ray's tries at a cluster's GCS (``RAY_gcs_server_port_wait_time_s``; each about 40 s where nothing answers), where
the environment does not set them: Ray's own twenty kept ``--address HOST:NOTHING_THERE`` silent for 14 minutes."""


def _join_ray(ray: Any, address: str) -> None:
    """``ray.init(address=...)``; CampaignError naming ``--address`` where there is no cluster to join (found in
    audit: a port nothing listened on was "internal error: ConnectionError" after 14 minutes, exit 3; a ray://
    address without ray[client], or an http:// one, "internal error: ValueError")."""
    wait = "RAY_gcs_server_port_wait_time_s"
    ours = wait not in os.environ
    if ours:  # for this connection only: a local head started later in this process waits for its GCS as Ray says
        os.environ[wait] = RAY_CONNECT_TRIES
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, ValueError) as exc:  # no cluster there; a malformed address; ray:// without ray[client]
        ray.shutdown()
        hint = ""
        if "AuthenticationError" in str(exc.__cause__):  # Ray says only "Failed to connect"; the cause is in its text
            hint = (" (the cluster asks for its token: RAY_AUTH_MODE=token, and the token in ~/.ray/auth_token or "
                    "RAY_AUTH_TOKEN)")
        elif isinstance(exc, ConnectionError):
            hint = " (is a Ray cluster running there? ray start --head prints its address)"
        raise CampaignError(f"--address {address}: {' '.join(str(exc).split())}{hint}") from None
    finally:
        if ours:
            os.environ.pop(wait, None)


# --- the campaign ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignResult:
    rows: list[dict[str, Any]]     # every case, by index
    ran: list[int]                 # the cases this invocation ran (the rest were finished before)
    out: Path
    notes: tuple[str, ...] = ()    # what resuming found and set aside (a torn journal line)

    @property
    def passed(self) -> bool:
        return all(r["status"] == "passed" for r in self.rows)

    def counts(self) -> dict[str, int]:
        out = {"passed": 0, "failed": 0, "error": 0}
        for r in self.rows:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out


def _write_manifest(out: Path, campaign: Campaign, rows: dict[int, dict[str, Any]], journal_ignored: int = 0) -> None:
    """The manifest, whole: every case's row (the journal's folded in). ``journal_ignored``: the journal lines
    set aside over the campaign's life (torn, or failing their check), kept as a count."""
    from flight.storage import write_checked_json

    write_checked_json(out / CAMPAIGN_MANIFEST, {
        "format": MANIFEST_FORMAT, "campaign": campaign.name, "hash": campaign.hash,
        "source": str(campaign.source), "scenario": str(campaign.scenario_path), "n_cases": campaign.n_cases,
        "inputs": campaign.inputs, "journal_ignored": journal_ignored,
        "cases": {f"{i:04d}": {"status": r["status"], "row": r} for i, r in sorted(rows.items())},
    })


def _journal_line(campaign_hash: str, row: dict[str, Any]) -> bytes:
    """One case's record: ``SHA-256 JSON\n``, the digest over the JSON (which holds no line break)."""
    body = json.dumps({"hash": campaign_hash, "case": row["case"], "status": row["status"], "row": row},
                      sort_keys=True, separators=(",", ":"))
    return f"{hashlib.sha256(body.encode()).hexdigest()} {body}\n".encode()


class CaseJournal:
    """The cases finished since the manifest was written whole, appended one line each and fsync'd before the
    next: a case costs the bytes of its own row (found in audit: the whole manifest was rewritten after each case,
    megabytes a case in a campaign of 10,000). The file is made, its folder synced, on the first append; at most
    one line a case a run, and folded into the manifest at the end and at a resume (:func:`_fold_journal`)."""

    def __init__(self, path: Path, campaign_hash: str):
        self.path = path
        self.campaign_hash = campaign_hash
        self._fd: int | None = None

    def append(self, row: dict[str, Any]) -> int:
        """Record ``row`` durably; the bytes written."""
        from flight.storage import fsync_path

        line = _journal_line(self.campaign_hash, row)
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            fsync_path(self.path.parent)  # the name, so the lines it will hold survive a power cut
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view):]
        getattr(os, "fdatasync", os.fsync)(self._fd)
        return len(line)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


@dataclass(frozen=True)
class JournalRead:
    rows: dict[int, dict[str, Any]]  # the newest row of each case the journal holds
    notes: list[str]                 # what was set aside, said
    ignored: int                     # lines set aside: torn, failing their check, another campaign's


def read_journal(path: Path, campaign_hash: str) -> JournalRead:
    """The newest row of each case in the journal at ``path``, and what was set aside, said and counted: a last
    line without its line break (an append a power cut or kill -9 stopped), a line failing its SHA-256 or another
    campaign's. Their cases run again; nothing else is lost."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return JournalRead({}, [], 0)
    except OSError as exc:
        raise CampaignError(f"{path}: cannot be read: {exc.strerror or exc}; pick another folder (--out)") from None
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" where the file ends with a whole line
    rows: dict[int, dict[str, Any]] = {}
    bad: list[int] = []
    for number, line in enumerate(lines, 1):
        digest, _, body = line.partition(b" ")
        try:
            if hashlib.sha256(body).hexdigest().encode() != digest:
                raise ValueError("SHA-256")
            record = json.loads(body)
            if record["hash"] != campaign_hash or not isinstance(record["row"], dict) \
                    or record["row"].get("case") != record["case"]:
                raise ValueError("not this campaign's")
            rows[int(record["case"])] = record["row"]
        except (ValueError, KeyError, TypeError):
            bad.append(number)
    notes = []
    if torn:
        notes.append(f"{path}: its last line was torn (an append a power cut or kill stopped): ignored, "
                     "its case runs again")
    if bad:
        notes.append(f"{path}: {len(bad)} line(s) failed their check (line {', '.join(map(str, bad[:5]))}"
                     f"{'…' if len(bad) > 5 else ''}): ignored, their cases run again")
    return JournalRead(rows, notes, len(bad) + bool(torn))


def _fold_journal(out: Path, campaign: Campaign, rows: dict[int, dict[str, Any]], journal_ignored: int) -> None:
    """The manifest written whole with ``rows``, then the journal removed: a power cut between the two leaves
    the journal's rows in the manifest as well, read twice to the same effect."""
    from flight.storage import fsync_path

    _write_manifest(out, campaign, rows, journal_ignored)
    try:
        os.unlink(out / JOURNAL)
    except FileNotFoundError:
        return
    fsync_path(out)


def read_progress(out: Path | str) -> dict[int, str]:
    """Each case finished so far in ``out``, by status, as a watcher of a running campaign sees it: the manifest
    with its journal (no campaign to check them against: for a look, not for a resume)."""
    from flight.storage import CorruptFile, read_checked_json

    out = Path(out)
    try:
        body = read_checked_json(out / CAMPAIGN_MANIFEST)
    except CorruptFile:
        return {}
    if not isinstance(body, dict):
        return {}
    statuses = {int(k): v["status"] for k, v in body.get("cases", {}).items()}
    statuses.update({i: row["status"] for i, row in read_journal(out / JOURNAL, body.get("hash", "")).rows.items()})
    return statuses


@dataclass(frozen=True)
class _Resume:
    rows: dict[int, dict[str, Any]]  # the finished cases (passed or failed): not run again
    notes: list[str]                 # what the journal set aside, said
    journal_ignored: int             # journal lines set aside over the campaign's life


def _read_manifest(out: Path, campaign: Campaign) -> dict[int, dict[str, Any]]:
    """The finished cases of an earlier run of this campaign in ``out`` (passed or failed; a case
    that could not run is tried again), from the manifest and its journal."""
    return _resume(out, campaign).rows


def _resume(out: Path, campaign: Campaign) -> _Resume:
    """What an earlier run of this campaign in ``out`` left: the manifest (refused where it is another
    campaign's), with the journal's newer rows over its own."""
    from flight.storage import CorruptFile, read_checked_json

    path = out / CAMPAIGN_MANIFEST
    if not path.exists():
        if (out / "cases").exists():
            raise CampaignError(f"{out}: holds case folders but no manifest; pick another folder (--out)")
        # Found in audit: a folder a `sunlit-hil run --report` wrote kept that run's summary.json and junit.xml (its
        # PASS) beside a campaign that failed; a campaign writes neither, so nothing would have replaced them.
        stray = [name for name in RUN_REPORT_VERDICTS if (out / name).exists()]
        if stray:
            raise CampaignError(f"{out}: holds a run's report ({', '.join(stray)}, from sunlit-hil run --report), "
                                "whose verdict would stand beside the campaign's; pick another folder (--out)")
        return _Resume({}, [], 0)
    try:
        body = read_checked_json(path)
    except CorruptFile as exc:
        raise CampaignError(f"{exc}; pick another folder (--out), or delete {path} to run every case again") from None
    if not isinstance(body, dict) or body.get("format") != MANIFEST_FORMAT:
        raise CampaignError(f"{path}: not a campaign manifest ({MANIFEST_FORMAT}); pick another folder (--out)")
    if body.get("hash") != campaign.hash:
        before = body.get("inputs") if isinstance(body.get("inputs"), dict) else {}
        changed = [p for p, sha in campaign.inputs.items() if p in before and before[p] != sha]
        what = (f"input files changed: {', '.join(changed)}" if changed
                else "the campaign file, its scenario or an input file (a profile, a board profile) changed")
        raise CampaignError(f"{out} holds another campaign ({body.get('campaign')!r}, hash {str(body.get('hash'))[:12]}…; "
                            f"this one is {campaign.hash[:12]}…: {what}); pick another folder (--out)")
    rows = {int(k): v["row"] for k, v in body.get("cases", {}).items()}
    journal = read_journal(out / JOURNAL, campaign.hash)
    rows.update(journal.rows)
    before = body.get("journal_ignored", 0)
    before = before if isinstance(before, int) and not isinstance(before, bool) and before >= 0 else 0
    finished = {i: r for i, r in rows.items() if r.get("status") in ("passed", "failed") and 0 <= i < campaign.n_cases}
    return _Resume(finished, journal.notes, before + journal.ignored)


def run_campaign(campaign: Campaign, out: Path | str, engine: str = "pool", workers: int | None = None,
                 address: str | None = None, progress: bool = True) -> CampaignResult:
    """Run the cases of ``campaign`` not finished in ``out`` yet; journal each case as it finishes, fold the
    journal into the manifest at the end, then write results.parquet and report.html over all of them."""
    import tomli_w

    from flight.storage import DirectoryBusy, DirectoryLock, remove_interrupted_writes, write_atomic

    out = Path(out)
    workers = max(1, workers or os.cpu_count() or 1)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = DirectoryLock(out, ".campaign.lock", "campaign")
    except DirectoryBusy as exc:
        raise CampaignError(str(exc)) from None
    except OSError as exc:  # a file there, a place it may not write: bad input, found before any case runs
        raise CampaignError(f"--out {out}: cannot write there: {exc.strerror or exc}") from None
    try:
        remove_interrupted_writes(out)
        resumed = _resume(out, campaign)
        rows = resumed.rows
        todo = [c for c in campaign.cases() if c.index not in rows]
        for case in todo:  # each case's scenario, as a file: what ran, for the record and to rerun by hand
            write_atomic(out / "cases" / f"{case.name}.toml",
                         (f"# case {case.index} of campaign {campaign.name!r} ({campaign.source})\n"
                          + tomli_w.dumps(_toml_safe(case.scenario))).encode())
        _fold_journal(out, campaign, rows, resumed.journal_ignored)
        token = secrets.token_hex(16)
        write_atomic(out / RUN_TOKEN, f"{token}\n".encode())  # what each case reads to know it sees this folder
        bar = _progress_bar(campaign, len(rows)) if progress else None
        journal = CaseJournal(out / JOURNAL, campaign.hash)
        not_passed = [sum(r["status"] != "passed" for r in rows.values())]

        def done(row: dict[str, Any]) -> None:
            journal.append(row)
            rows[row["case"]] = row
            if bar is not None:
                not_passed[0] += row["status"] != "passed"
                bar.update(1)
                bar.set_postfix_str(f"{not_passed[0]} not passed")
            _stop_if_folder_unseen(row)

        failed = True
        try:
            run_jobs(run_case, [_job(campaign, c, out, token) for c in todo], done, engine, workers, address,
                     crashed=_crashed_row)
            failed = False
        finally:
            if bar is not None:
                bar.close()
            journal.close()
            try:  # stopped (Ctrl-C, SIGTERM, a node that cannot see the folder) or done: the manifest whole again
                _fold_journal(out, campaign, rows, resumed.journal_ignored)
            except OSError:
                if not failed:
                    raise
                # stopping already: the journal stays, and the next run folds it in
        ordered = [rows[i] for i in sorted(rows)]
        write_results(out, campaign, ordered)
        return CampaignResult(ordered, sorted(c.index for c in todo), out, tuple(resumed.notes))
    finally:
        lock.release()


def _toml_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _toml_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_toml_safe(v) for v in value]
    return value


def _progress_bar(campaign: Campaign, finished: int):
    """Cases done, on stderr (tqdm draws nothing when stderr is not a terminal, keeping CI logs clean)."""
    from tqdm import tqdm

    return tqdm(total=campaign.n_cases, initial=finished, desc=campaign.name, unit="case", file=sys.stderr,
                disable=None, dynamic_ncols=True)


# --- results ----------------------------------------------------------------------------------------


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A result row without its wall-clock fields: what two runs of the same case must agree on."""
    return {k: v for k, v in row.items() if k not in WALL_CLOCK_COLUMNS}


UPSET_COLUMNS = ("upsets_requested", "upsets_applied", "upsets_detected", "upsets_corrected",
                 "upsets_corrupt_reported_good", "upsets_corrupt_unchecked")
"""A case's memory upsets (its run's account, hil/loop.py), where its scenario asks for them."""


def _upset_columns(account: dict[str, Any] | None) -> dict[str, int]:
    """The memory upsets of one case as columns: asked, applied, detected and put right (each upset
    once), and the corrupt tiles its products said passed or unchecked (each judged batch once)."""
    if not account:
        return {}
    totals, batches = account.get("totals", {}), account.get("batches", {})
    applied = {key: sum(int(t.get(key, 0)) for t in totals.values()) for key in ("applied", "detected", "corrected")}
    return {"upsets_requested": sum(int(n) for n in account.get("requested", {}).values()),
            "upsets_applied": applied["applied"], "upsets_detected": applied["detected"],
            "upsets_corrected": applied["corrected"],
            "upsets_corrupt_reported_good": int(batches.get("corrupt_reported_good", 0)),
            "upsets_corrupt_unchecked": int(batches.get("corrupt_unchecked", 0))}


def _columns(campaign: Campaign, rows: list[dict[str, Any]]) -> list[str]:
    params = [*campaign.sweep, *sorted(campaign.dispersion)]
    if "seed" not in params:
        params.append("seed")
    checks = sorted({k for r in rows for k in r if k.startswith("check_")})
    upsets = [c for c in UPSET_COLUMNS if any(c in r for r in rows)]  # only where a case asked for upsets
    results = [c for c in RESULT_COLUMNS if c not in params and c != "case"]
    return ["case", *params, *results[:2], *checks, *upsets, *results[2:]]


def write_results(out: Path, campaign: Campaign, rows: list[dict[str, Any]]) -> None:
    """results.parquet (one row per case) and report.html, both written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flight.storage import write_atomic

    columns = _columns(campaign, rows)
    data = {}
    for col in columns:
        values = [r.get(col) for r in rows]
        try:
            data[col] = pa.array(values, pa.string() if col in ("status", "error") else None)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # a choice of mixed kinds, an integer past
            # int64 (a seed: found in audit, every case flown, then exit 3 and no results): keep it readable as text
            data[col] = _as_text(values)
        if pa.types.is_nested(data[col].type) and not _parquet_writes(data[col]):  # a table with no keys ({})
            data[col] = _as_text(values)
    table = pa.table(data).replace_schema_metadata({
        "sunlit.campaign": campaign.name, "sunlit.campaign_hash": campaign.hash,
        "sunlit.scenario": str(campaign.scenario_path)})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_atomic(out / "results.parquet", buf.getvalue())
    write_atomic(out / "report.html", _html(campaign, rows, columns).encode())


def _as_text(values: list[Any]) -> Any:
    import pyarrow as pa

    return pa.array([None if v is None else str(v) for v in values], pa.string())


def _parquet_writes(array: Any) -> bool:
    """Whether Parquet can hold ``array`` (found in audit: a sweep over an empty table, [sweep] criteria = [{}],
    made a struct with no field, which Parquet refuses: every case flown, then exit 3 and no results)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pq.write_table(pa.table({"column": array}), io.BytesIO())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return True


HISTOGRAMS = (("work_tiles", "work (tiles)"), ("soc_min_pct", "lowest charge (%)"),
              ("floor_violation_steps", "steps below the floor"), ("temp_max_c", "hottest board (°C)"),
              ("wall_s", "wall time per case (s)"))


def _histograms(rows: list[dict[str, Any]]) -> str:
    from matplotlib.figure import Figure  # the Agg canvas, without pyplot's global state

    fig = Figure(figsize=(3.2 * len(HISTOGRAMS), 2.6))
    axes = fig.subplots(1, len(HISTOGRAMS))
    for ax, (col, label) in zip(axes, HISTOGRAMS):
        ok = [r[col] for r in rows if r.get(col) is not None and r["status"] == "passed"]
        bad = [r[col] for r in rows if r.get(col) is not None and r["status"] != "passed"]
        if ok or bad:
            ax.hist([ok, bad], bins=min(20, max(3, len(ok) + len(bad))), stacked=True,
                    color=["tab:green", "tab:red"], label=["passed", "failed"])
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("cases", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return base64.b64encode(buf.getvalue()).decode()


def _html(campaign: Campaign, rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(col: str, value: Any) -> str:
        if value is None:
            return "<td></td>"
        if col == "case":
            return f'<td><a href="cases/{value:04d}/report.html">{value:04d}</a></td>'
        if isinstance(value, bool):
            return f"<td class={'ok' if value else 'bad'}>{'PASS' if value else 'FAIL'}</td>"
        if isinstance(value, float):
            return f"<td>{value:.4g}</td>"
        css = {"passed": "ok", "failed": "bad", "error": "bad"}.get(value, "") if col == "status" else ""
        return f"<td class='{css}'>{html.escape(str(value))}</td>"

    counts = {s: sum(r["status"] == s for r in rows) for s in ("passed", "failed", "error")}
    head = "".join(f"<th>{html.escape(c.removeprefix('check_'))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(cell(c, r.get(c)) for c in columns) + "</tr>" for r in rows)
    varied = {**{k: f"sweep over {len(v)} values" for k, v in campaign.sweep.items()},
              **{k: f"{d.kind} {list(d.args)}" + (f" clipped to {list(d.clip)}" if d.clip else "")
                 for k, d in campaign.dispersion.items()},
              **{k: f"set to {v!r}" for k, v in campaign.fixed.items()}}
    how = "".join(f"<li><code>{html.escape(k)}</code>: {html.escape(v)}</li>" for k, v in varied.items())
    verdict = "PASS" if counts["passed"] == len(rows) == campaign.n_cases else "FAIL"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Sunlit campaign: {html.escape(campaign.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:2px 8px;font-size:90%}} .ok{{color:green}}
.bad{{color:red;font-weight:bold}} table{{border-collapse:collapse}} tr:nth-child(even){{background:#f4f4f4}}</style>
</head><body><h1>{html.escape(campaign.name)}: {verdict}</h1>
<p>{len(rows)} of {campaign.n_cases} cases finished: {counts['passed']} passed, {counts['failed']} failed their
criteria, {counts['error']} could not run. Base scenario <code>{html.escape(str(campaign.scenario_path))}</code>;
campaign seed {campaign.seed}; hash {campaign.hash[:12]}. Each case's full report is linked from its number.</p>
<ul>{how}</ul>
<h2>Distributions</h2><img src="data:image/png;base64,{_histograms(rows)}" alt="histograms of work, lowest charge, floor violations, temperature, wall time">
<h2>Cases</h2><table><tr>{head}</tr>{body}</table></body></html>"""


# --- the command line (wired into sunlit-hil by hil/cli.py) ---------------------------------------


def add_campaign_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``campaign`` to ``sunlit-hil``'s subcommands; it calls :func:`main_campaign`."""
    p = subparsers.add_parser("campaign", help="run a campaign of scenarios: sweeps and Monte Carlo dispersions",
                              description="Run every case of a campaign file (docs/campaigns.md); the same "
                                          "command on the same --out resumes. Exit 0: every case passed; "
                                          "1: some failed; 2: bad input.")
    p.add_argument("campaign", metavar="FILE", help="the campaign file (TOML)")
    p.add_argument("--out", required=True, metavar="DIR", help="where the manifest, cases and results go")
    p.add_argument("--engine", choices=("pool", "ray"), default="pool",
                   help="pool: local processes (default); ray: a Ray cluster (pip install 'sunlit[campaign]')")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="cases at once (default: this machine's CPUs); with --engine ray and no --address, "
                        "the CPUs the local Ray gets")
    p.add_argument("--address", metavar="ADDR", help="a running Ray cluster (host:6379; ray://host:10001 needs "
                                                     "ray[client]); without it a Ray of this machine only is started")
    p.set_defaults(func=main_campaign)
    return p


def main_campaign(args: argparse.Namespace) -> int:
    def bad(message: str) -> int:
        print(f"sunlit-hil campaign: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT

    if args.workers is not None and args.workers < 1:
        return bad(f"--workers: give 1 or more, got {args.workers}")
    if args.address and args.engine != "ray":
        return bad("--address is for --engine ray")
    if args.engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            return bad(f"--engine ray needs Ray: {INSTALL_RAY}")
    try:
        campaign = load_campaign(args.campaign)
    except CampaignError as exc:
        return bad(str(exc))
    previous = signal.getsignal(signal.SIGTERM)
    if _main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # kill PID: stop as Ctrl-C does, the manifest kept
    try:
        result = run_campaign(campaign, args.out, args.engine, args.workers, args.address)
    except CampaignError as exc:
        return bad(str(exc))
    except KeyboardInterrupt:
        print(f"sunlit-hil campaign: interrupted; the cases finished are in {Path(args.out) / 'manifest.json'}; "
              f"run the same command again to run the rest", file=sys.stderr)
        return 130
    finally:
        if _main_thread():
            signal.signal(signal.SIGTERM, previous)
    for note in result.notes:
        print(f"sunlit-hil campaign: note: {note}", file=sys.stderr)
    counts = result.counts()
    lines = [f"{campaign.name}: {'PASS' if result.passed else 'FAIL'}   {len(result.rows)} cases "
             f"({len(result.ran)} run now, {len(result.rows) - len(result.ran)} finished before): "
             f"{counts['passed']} passed, {counts['failed']} failed, {counts['error']} could not run"]
    for row in result.rows:
        if row["status"] != "passed":
            why = row["error"] or ", ".join(k.removeprefix("check_") for k, v in row.items()
                                           if k.startswith("check_") and v is False)
            lines.append(f"  case {row['case']:04d} {row['status']}: {why}")
    out = Path(args.out).resolve()
    lines.append(f"  results: {out / 'results.parquet'}\n  report: {out / 'report.html'}")
    print_out("\n".join(lines))  # a reader gone (| head) leaves the campaign's exit code as it is
    return EXIT_PASS if result.passed else EXIT_FAILED


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """``python -m hil.campaign FILE --out DIR``: the same as ``sunlit-hil campaign``."""
    parser = argparse.ArgumentParser(prog="sunlit-hil")
    add_campaign_parser(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(["campaign", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
