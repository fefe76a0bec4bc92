"""Campaigns (hil/campaign.py): sweeps and dispersions with seeds, on a local pool and on a local
Ray with the same results, resumed from their manifest after a kill, bad input refused naming
the key. Cases are one-orbit scenarios cut to 300 simulated seconds (about 2 s each)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flight.storage import read_checked_json
from hil.campaign import CampaignError, comparable, load_campaign, read_progress

pytestmark = pytest.mark.system  # agents as subprocesses, a local Ray

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "hil" / "scenarios" / "sso_one_orbit.toml"

# 2 sweep points x 2 draws. The sweep is over a criterion, so that which cases fail does not hang on
# the agent's policy: no case does 10^12 tiles of work, so cases 0 and 1 fail min_work and the
# campaign's exit status is 1, with both verdicts in the rows.
MIXED = f"""
name = "mixed"
scenario = "{SCENARIO}"
cases = 2
seed = 11

[set]
duration_s = 300

[sweep]
"criteria.min_work" = [1.0e12, 0.0]

[dispersion]
"battery.soc_initial_pct" = {{ uniform = [55.0, 90.0] }}
"battery.capacity_wh" = {{ uniform = [40.0, 80.0] }}
"""


def campaign(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hil", "campaign", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq  # here, not above: the engines' test's workers import this module (_dies_on_two)

    return pq.read_table(out / "results.parquet").to_pylist()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def pool_run(tmp_path_factory):
    """The mixed campaign on the local process pool (two workers), run once for the module."""
    d = tmp_path_factory.mktemp("campaign")
    file = write(d / "mixed.toml", MIXED)
    run = campaign(str(file), "--out", str(d / "pool"), "--workers", "2")
    return file, d / "pool", run


@pytest.mark.req("HIL-009")
def test_a_campaign_writes_parquet_an_html_summary_and_a_manifest(pool_run):
    import pyarrow.parquet as pq

    file, out, run = pool_run
    assert run.returncode == 1, run.stdout + run.stderr  # cases 0 and 1 fail their criteria
    assert "Traceback" not in run.stderr
    table = pq.read_table(out / "results.parquet")
    got = table.to_pylist()
    assert [r["case"] for r in got] == [0, 1, 2, 3]
    # Case i is sweep point i // cases, draw i % cases: the sweep's value and the draws' values line up.
    assert [r["criteria.min_work"] for r in got] == [1e12, 1e12, 0.0, 0.0]
    assert got[0]["battery.soc_initial_pct"] == got[2]["battery.soc_initial_pct"] != got[1]["battery.soc_initial_pct"]
    assert all(55.0 <= r["battery.soc_initial_pct"] <= 90.0 for r in got)
    assert [r["status"] for r in got] == ["failed", "failed", "passed", "passed"]
    assert [r["check_minimum_work"] for r in got] == [False, False, True, True]
    for r in got:
        assert r["floor_violation_steps"] == 0 and r["sim_s"] == 300.0 and r["wall_s"] > 0 and r["error"] is None
        assert r["soc_min_pct"] <= r["battery.soc_initial_pct"] and r["temp_max_c"] < 95.0
    assert table.schema.metadata[b"sunlit.campaign"] == b"mixed"
    manifest = read_checked_json(out / "manifest.json")
    assert manifest["hash"] == load_campaign(file).hash and manifest["n_cases"] == 4
    assert {k: v["status"] for k, v in manifest["cases"].items()} == {
        "0000": "failed", "0001": "failed", "0002": "passed", "0003": "passed"}
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and 'href="cases/0003/report.html"' in page
    assert (out / "cases" / "0003" / "summary.json").exists() and (out / "cases" / "0003.toml").exists()
    assert "case 0000 failed: minimum_work" in run.stdout


@pytest.mark.req("HIL-009")
def test_a_local_ray_gives_the_same_rows_as_the_local_pool(pool_run):
    """The same campaign on a Ray of one worker (a worker is seconds of CPU to start) as on the pool's two: the rows
    hang neither on the engine nor on the number of workers."""
    file, pool_out, _ = pool_run
    out = pool_out.parent / "ray"
    run = campaign(str(file), "--out", str(out), "--engine", "ray", "--workers", "1")
    assert run.returncode == 1, run.stdout + run.stderr
    assert [comparable(r) for r in rows(out)] == [comparable(r) for r in rows(pool_out)]
    # The Ray it started is shut down again: tests/conftest.py fails the run if any process of it is left.


@pytest.mark.req("HIL-009")
@pytest.mark.timeout(300)  # three campaigns of seconds of CPU each: 25 s here at a load of 8, more on a loaded CI
def test_a_killed_campaign_resumes_and_runs_only_the_missing_cases(pool_run, tmp_path, short_dir):
    file, pool_out, _ = pool_run
    out = tmp_path / "killed"
    # Its case's run folder in a temporary directory of the test's: a kill -9 leaves it (no clean-up at all), and
    # /tmp gained one each run of the suite
    proc = subprocess.Popen([sys.executable, "-m", "hil", "campaign", str(file), "--out", str(out), "--workers", "1"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TMPDIR": str(short_dir)})
    try:
        deadline = time.monotonic() + 150  # a bound, not a measure: a case's agent starts slowly on a loaded machine
        finished: dict = {}
        while not finished and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            finished = read_progress(out)  # the manifest and its journal, a line a case as it finishes
        assert finished, "no case finished within 150 s"
        os.kill(proc.pid, signal.SIGKILL)  # no clean-up at all: its pool worker follows it (PR_SET_PDEATHSIG)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    done_before = set(read_progress(out))
    assert 1 <= len(done_before) < 4
    run = campaign(str(file), "--out", str(out), "--workers", "1")  # one worker: each is seconds of CPU to start
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"({4 - len(done_before)} run now, {len(done_before)} finished before)" in run.stdout
    assert [comparable(r) for r in rows(out)] == [comparable(r) for r in rows(pool_out)]
    # Again: nothing left to run, the same verdict.
    again = campaign(str(file), "--out", str(out))
    assert again.returncode == 1 and "(0 run now, 4 finished before)" in again.stdout


@pytest.mark.req("HIL-009")
def test_a_resume_sets_aside_a_torn_journal_line_and_runs_its_case_again(pool_run, tmp_path):
    """A power cut mid-append leaves the journal's last line torn; a line may fail its SHA-256. Each is set
    aside, said and counted, its case run again; the rest of the journal, and the manifest, are kept."""
    import shutil

    from hil.campaign import JOURNAL, CaseJournal, _write_manifest

    file, pool_out, _ = pool_run
    out = tmp_path / "torn"
    shutil.copytree(pool_out, out)
    c = load_campaign(file)
    before = {int(k): v["row"] for k, v in read_checked_json(pool_out / "manifest.json")["cases"].items()}
    _write_manifest(out, c, {0: before[0]})  # the manifest as folded at the start of a run
    journal = CaseJournal(out / JOURNAL, c.hash)
    for i in (1, 2, 3):
        journal.append(before[i])
    journal.close()
    lines = (out / JOURNAL).read_bytes().split(b"\n")
    lines[0] = lines[0].replace(b'"status":"failed"', b'"status":"passed"', 1)  # case 1's line, damaged
    (out / JOURNAL).write_bytes(b"\n".join(lines)[:-30])  # and case 3's cut short, as a power cut leaves it
    assert set(read_progress(out)) == {0, 2}
    run = campaign(str(file), "--out", str(out), "--workers", "1")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "(2 run now, 2 finished before)" in run.stdout, run.stdout
    assert f"note: {out / JOURNAL}: its last line was torn" in run.stderr, run.stderr
    assert f"note: {out / JOURNAL}: 1 line(s) failed their check (line 1)" in run.stderr, run.stderr
    assert [comparable(r) for r in rows(out)] == [comparable(r) for r in rows(pool_out)]
    manifest = read_checked_json(out / "manifest.json")
    assert sorted(manifest["cases"]) == ["0000", "0001", "0002", "0003"] and manifest["journal_ignored"] == 2
    assert not (out / JOURNAL).exists(), "folded into the manifest at the end"


_PER_CASE = """
import json, shutil, sys
from pathlib import Path
from hil.campaign import JOURNAL, load_campaign, run_campaign
from flight.storage import read_checked_json

def written():
    return int(next(line for line in Path("/proc/self/io").read_text().splitlines()
                    if line.startswith("wchar:")).split()[1])

root, tmp, per_case = Path(sys.argv[1]), Path(sys.argv[2]), {}
for n in (40, 160):
    d = tmp / str(n)
    d.mkdir()
    shutil.copy(root / "hil" / "data" / "profiles" / "sso_550.parquet", d / "p.parquet")
    (d / "sc.toml").write_text('name = "p"\\nprofile = "p.parquet"\\nduration_s = 300\\nstep_s = 10\\n')
    points = ", ".join(str(40.0 + 0.25 * i) for i in range(n))
    (d / "c.toml").write_text(f'scenario = "sc.toml"\\n[sweep]\\n"battery.soc_initial_pct" = [{points}]\\n')
    c = load_campaign(d / "c.toml")
    (d / "p.parquet").unlink()
    start = written()
    result = run_campaign(c, d / "out", workers=1, progress=False)
    per_case[n] = (written() - start) / n
    assert [r["status"] for r in result.rows] == ["error"] * n and "p.parquet" in result.rows[0]["error"]
    assert len(read_checked_json(d / "out" / "manifest.json")["cases"]) == n and not (d / "out" / JOURNAL).exists()
print(json.dumps(per_case))
"""


@pytest.mark.req("HIL-009")
def test_the_bytes_a_campaign_writes_per_case_do_not_grow_with_its_cases(tmp_path):
    """Found in audit: the manifest was rewritten whole after each case, O(n^2) bytes for n cases (megabytes a
    case in a campaign of 10,000). Counted in the bytes the campaign's process writes (/proc/self/io, wchar),
    over campaigns of 40 and 160 cases whose profile is gone once they are loaded: each case an error row at
    once, on a real pool (of one worker: a second only costs its start), with the bookkeeping of any other case.
    (In a process of its own: the pool's resource tracker goes with it.)"""
    run = subprocess.run([sys.executable, "-c", _PER_CASE, str(ROOT), str(tmp_path)], capture_output=True, text=True,
                         timeout=240, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    per_case = {int(n): b for n, b in json.loads(run.stdout.strip().splitlines()[-1]).items()}
    assert per_case[160] < 1.5 * per_case[40], per_case  # linear: a case costs its own row, whatever came before


@pytest.mark.req("HIL-009")
def test_a_case_on_a_node_that_cannot_see_the_campaigns_folder_stops_the_campaign_naming_it(tmp_path):
    """A Ray node without the shared filesystem: its case flies nothing and writes nothing, says the folder and
    the node, and the campaign stops there (exit 2) rather than let that node fail every case it takes."""
    from hil.campaign import FOLDER_NOT_SEEN, RUN_TOKEN, _job, _stop_if_folder_unseen, run_case

    c = load_campaign(write(tmp_path / "c.toml", f'scenario = "{SCENARIO}"\ncases = 1\nseed = 1\n'))
    elsewhere = tmp_path / "not-shared"
    for why in ("no such folder there", "it holds another run's"):
        row = run_case(_job(c, c.case(0), elsewhere, "this-run"))
        assert row["status"] == "error" and row["error"].startswith(f"{FOLDER_NOT_SEEN} {elsewhere} on node ")
        assert f"({why}): on a Ray cluster every node must see --out" in row["error"], row["error"]
        assert "shared filesystem" in row["error"] and not (elsewhere / "cases").exists()
        with pytest.raises(CampaignError, match=f"case 0: {FOLDER_NOT_SEEN} {elsewhere}.*the campaign stopped"):
            _stop_if_folder_unseen(row)
        elsewhere.mkdir(exist_ok=True)
        (elsewhere / RUN_TOKEN).write_text("another-run\n")  # a folder of its own by that name


@pytest.mark.req("HIL-009")
def test_another_campaign_in_the_same_folder_is_refused(pool_run, tmp_path):
    file, pool_out, _ = pool_run
    changed = write(tmp_path / "mixed.toml", MIXED.replace("seed = 11", "seed = 12"))
    run = campaign(str(changed), "--out", str(pool_out))
    assert run.returncode == 2 and "pick another folder" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.req("HIL-009")
def test_dispersion_draws_are_reproducible_and_depend_only_on_the_seed_and_the_case(tmp_path):
    def draws(n: int, seed: int = 5) -> list[dict]:
        body = MIXED.replace("cases = 2", f"cases = {n}").replace("seed = 11", f"seed = {seed}")
        body = body.replace('"criteria.min_work" = [1.0e12, 0.0]', "")
        body += '"power.platform_load_w" = { normal = [12.0, 2.0], clip = [6.0, 20.0] }\n'
        body += 'board = { choice = ["orin_nx_16gb", "orin_nano", "agx_orin_64gb"] }\n'
        c = load_campaign(write(tmp_path / f"d{n}_{seed}.toml", body))
        return [c.case(i).params for i in range(c.n_cases)]

    eight = draws(8)
    assert draws(8) == eight  # the same file, the same cases
    assert draws(3) == eight[:3]  # case i does not depend on how many cases there are
    assert draws(8, seed=6) != eight
    assert len({p["seed"] for p in eight}) == 8  # each case flies with a scenario seed of its own
    assert all(6.0 <= p["power.platform_load_w"] <= 20.0 for p in eight)
    c = load_campaign(write(tmp_path / "again.toml", MIXED))
    backwards = [c.case(i) for i in reversed(range(c.n_cases))][::-1]  # order of generation is irrelevant
    assert [x.params for x in backwards] == [x.params for x in c.cases()]
    assert all(x.scenario["duration_s"] == 300 for x in backwards)


@pytest.mark.req("HIL-009")
@pytest.mark.parametrize("body, key", [
    ('[set]\n"battery.capacity" = 5.0', "battery.capacity"),
    ('[sweep]\n"batery.capacity_wh" = [20.0]', "batery"),
    ('[sweep]\n"faults.0.at_s" = [10.0]', "faults.0.at_s"),
    ('[sweep]\n"battery.soc_initial_pct" = [150.0]', "battery.soc_initial_pct"),
    ("casses = 3", "casses"),
    ('seed = 1\n[dispersion]\n"battery.soc_initial_pct" = { unifrom = [40, 90] }', "unifrom"),
    ('[dispersion]\n"battery.soc_initial_pct" = { uniform = [40, 90] }', "seed"),
    ("seed = 1\ncases = 100000000", "cases: 100000000 cases"),  # once read on, silent, for ever
    ('seed = 1\ncases = 1001\n[sweep]\n"battery.soc_initial_pct" = [50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, '
     '40.0, 45.0, 55.0]', "cases: 10010 cases"),
    # Found in audit: each reached numpy and was an internal error (exit 3: OverflowError, ValueError)
    ('seed = 1\n[dispersion]\n"battery.capacity_wh" = { uniform = [10.0, inf] }',
     "dispersion.battery.capacity_wh: uniform: give finite numbers"),
    ('seed = 1\n[dispersion]\n"battery.capacity_wh" = { uniform = [-1e308, 1e308] }',
     "dispersion.battery.capacity_wh: uniform: high - low must be a finite number"),
    ('seed = 1\n[dispersion]\n"battery.capacity_wh" = { integers = [10, 100000000000000000000] }',
     "dispersion.battery.capacity_wh: integers: bounds must fit a 64-bit integer"),
])
def test_a_typo_or_bad_value_in_a_campaign_is_exit_2_naming_the_key(tmp_path, body, key):
    file = write(tmp_path / "bad.toml", f'scenario = "{SCENARIO}"\n{body}\n')
    with pytest.raises(CampaignError, match=key.replace(".", r"\.")):
        load_campaign(file)
    run = campaign(str(file), "--out", str(tmp_path / "out"))
    assert run.returncode == 2, run.stdout + run.stderr
    assert key in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.req("HIL-009")
def test_a_dotted_key_written_without_quotes_sets_that_key_alone_and_a_default_is_no_typo(tmp_path):
    """Found in audit: criteria.min_work = 0 without quotes is a table to TOML, and set as a whole it replaced
    the scenario's [criteria]: its charge floor and temperature checks gone, a failing case passed. And a key
    set to its default changed nothing, so it was refused as a typo."""
    from hil.scenario import parse_scenario

    file = write(tmp_path / "c.toml", f'scenario = "{SCENARIO}"\n[set]\ncriteria.min_work = 0\n'
                                      '"battery.charge_efficiency" = 0.94\n[sweep]\nbattery.soc_initial_pct = [50.0]\n')
    c = load_campaign(file)
    scenario = c.case(0).scenario
    sc = parse_scenario(scenario, "c.toml", base_dir=SCENARIO.parent)
    assert sc.criteria.min_work == 0 and sc.criteria.charge_floor_pct is not None
    assert sc.criteria.temp_max_c is not None and sc.soc_initial_pct == 50.0
    assert c.case(0).params["battery.soc_initial_pct"] == 50.0


def _dies_on_two(job: int) -> int:
    """A job whose worker dies under it (as killed, out of memory), for the engines' test."""
    if job == 2:
        time.sleep(0.5)
        os._exit(9)
    time.sleep(0.2)
    return job


_ENGINES = """
import json, sys
from hil.campaign import run_jobs
from tests.test_hil_campaign import _dies_on_two
got = []
run_jobs(_dies_on_two, list(range(6)), got.append, sys.argv[1], workers=2, crashed=lambda job, why: [job, why])
try:
    run_jobs(_dies_on_two, [2], lambda r: None, sys.argv[1], workers=1)
    alone = "ran"
except Exception as exc:
    alone = type(exc).__name__
print(json.dumps({"got": got, "alone": alone}))
"""


@pytest.mark.req("HIL-009")
@pytest.mark.parametrize("engine", ["pool", "ray"])
def test_a_worker_that_dies_costs_its_case_not_the_campaign(engine):
    """Found in audit: one dead worker ended the whole campaign (exit 3, no report, the other cases dropped).
    Its case, and on the pool the ones beside it in flight, get a row saying so (run again on resume); the
    rest run. Without a ``crashed`` answer (bench.power) the death still ends the run. (In a process of its own:
    the pool's resource tracker goes with it.)"""
    run = subprocess.run([sys.executable, "-c", _ENGINES, engine], capture_output=True, text=True, timeout=240,
                         cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    body = json.loads(run.stdout.strip().splitlines()[-1])
    got = body["got"]
    results = {r if isinstance(r, int) else r[0]: r for r in got}
    assert sorted(results) == list(range(6)) and len(got) == 6, got
    assert isinstance(results[2], list) and "run the campaign again" in results[2][1]
    assert sum(isinstance(r, int) for r in got) >= 3, got  # at most the one beside it (and the next queued) lost
    assert body["alone"] != "ran"


@pytest.mark.req("HIL-009")
def test_sigterm_stops_a_ray_campaign_as_ctrl_c_does(pool_run, tmp_path):
    """Found in audit: ray.init put its own SIGTERM handler in: kill PID gave exit 1 (a case failed, to CI) and a
    native stack dump, not 130 and the line saying how to resume. Sent as soon as a case is under way (Ray is up:
    while it starts, its own native handler has SIGTERM)."""
    file, _, _ = pool_run
    out = tmp_path / "ray-term"
    proc = subprocess.Popen([sys.executable, "-m", "hil", "campaign", str(file), "--out", str(out), "--engine", "ray",
                             "--workers", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        begun = False
        while not begun and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            # a case's report folder, made as it begins in its Ray task: ray.init has returned, our handler is back
            begun = (out / "cases").is_dir() and any(p.is_dir() for p in (out / "cases").iterdir())
        assert begun and proc.poll() is None, "no case began within 90 s"
        os.kill(proc.pid, signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "run the same command again" in err and "SIGTERM received" not in err


@pytest.mark.req("HIL-009")
@pytest.mark.timeout(300)  # Ray's one try at a port nothing answers is about 45 s of its own timeouts
def test_an_address_with_no_ray_cluster_is_exit_2_naming_it(tmp_path):
    """Found in audit: --address at a port nothing listens on tried Ray's twenty times (about 40 s each), silent for
    14 minutes, then "internal error: ConnectionError" (exit 3); an http:// address (the dashboard's) was an internal
    ValueError at once. Both are bad input naming --address; the port is held, never listened on: refused."""
    import socket

    file = write(tmp_path / "c.toml", f'scenario = "{SCENARIO}"\ncases = 1\nseed = 1\n[set]\nduration_s = 60\n')
    with socket.socket() as held:
        held.bind(("", 0))
        port = held.getsockname()[1]
        for address, said in ((f"127.0.0.1:{port}", "is a Ray cluster running there?"),
                              ("http://127.0.0.1:8265", "Invalid Ray address")):
            run = campaign(str(file), "--out", str(tmp_path / "out"), "--engine", "ray", "--address", address,
                           timeout=240)  # one try, not twenty
            assert run.returncode == 2, run.stdout + run.stderr
            line = run.stderr.strip().splitlines()[-1]
            assert line.startswith(f"sunlit-hil campaign: --address {address}: ") and said in line, line
            assert "internal error" not in run.stderr and "Traceback" not in run.stderr


@pytest.mark.req("HIL-009")
def test_a_campaign_path_that_is_a_folder_is_exit_2_naming_it(tmp_path):
    """Found in audit: IsADirectoryError, an internal error (exit 3)."""
    with pytest.raises(CampaignError, match=f"{tmp_path}: cannot read the campaign file"):
        load_campaign(tmp_path)


@pytest.mark.req("HIL-009")
def test_an_out_folder_it_cannot_write_is_exit_2_before_any_case(tmp_path):
    """--out naming a file once gave 'internal error: FileExistsError', exit 3."""
    file = write(tmp_path / "c.toml", f'scenario = "{SCENARIO}"\ncases = 1\nseed = 1\n')
    (tmp_path / "a-file").write_text("")
    for out in (tmp_path / "a-file", tmp_path / "a-file" / "below"):
        run = campaign(str(file), "--out", str(out))
        assert run.returncode == 2, run.stdout + run.stderr
        assert f"--out {out}: cannot write there" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.req("HIL-009")
def test_a_fault_in_the_campaigns_scenario_is_named_in_that_file(tmp_path):
    """Found in use: a scenario's own unknown key was said as the campaign's first case's fault, under the
    campaign's name; a fault in a key the campaign sets is still left to the cases, which say their values."""
    text = SCENARIO.read_text().replace('profile = "../', f'profile = "{SCENARIO.parent.parent}/', 1)
    scenario = write(tmp_path / "typo.toml", text.replace("[battery]", "[battery]\ncapacity = 60.0", 1))
    assert "capacity = 60.0" in scenario.read_text()
    file = write(tmp_path / "camp.toml", f'scenario = "{scenario}"\ncases = 1\nseed = 1\n')
    with pytest.raises(CampaignError) as caught:
        load_campaign(file)
    said = str(caught.value)
    assert said.startswith(f"{scenario}: battery.capacity") and "typo.toml that camp.toml runs" in said, said
    assert "case" not in said
    # A fault in a key the campaign sets for every case: the campaign's value stands.
    fixed = write(tmp_path / "fixed.toml", text.replace("duration_s =", "duration_s = -1 #", 1))
    assert load_campaign(write(tmp_path / "camp2.toml", f'scenario = "{fixed}"\n[set]\nduration_s = 300\n')).n_cases
    # One the campaign's value for another key cures (a command past the scenario's end, the run made longer),
    # or one in a list the campaign sets by index (faults[0].at_s as faults.0.at_s): left to the cases.
    late = write(tmp_path / "late.toml", text.replace("duration_s =", "duration_s = 600 #", 1)
                 + "\n[[commands]]\nat_s = 7000.0\ncommand = \"NOOP\"\n")
    assert load_campaign(write(tmp_path / "camp3.toml", f'scenario = "{late}"\n[set]\nduration_s = 8640\n')).n_cases
    index = text.count("[[commands]]")  # the one added, after the scenario's own
    by_index = f'scenario = "{late}"\n[set]\n"commands.{index}.at_s" = 100.0\n'
    assert load_campaign(write(tmp_path / "camp4.toml", by_index)).n_cases


@pytest.mark.req("HIL-009")
def test_ray_stays_optional(tmp_path):
    """Importing hil.campaign imports no Ray; --engine ray without Ray says what to install (exit 2)."""
    probe = ("import sys; import hil.campaign, hil.cli; assert 'ray' not in sys.modules; "
             "sys.modules['ray'] = None; "  # as if Ray were not installed: `import ray` raises ImportError
             f"sys.exit(hil.cli.main(['campaign', {str(ROOT / 'hil' / 'campaigns' / 'battery_sweep.toml')!r}, "
             f"'--out', {str(tmp_path / 'out')!r}, '--engine', 'ray']))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "pip install 'sunlit[campaign]'" in run.stderr and "Traceback" not in run.stderr


def test_the_shipped_campaigns_load():
    for path in sorted((ROOT / "hil" / "campaigns").glob("*.toml")):
        c = load_campaign(path)
        assert c.n_cases >= 8, path
        assert json.dumps([c.case(i).params for i in range(c.n_cases)])  # plain values, ready for TOML and JSON


@pytest.mark.req("HIL-022")
def test_a_case_with_memory_upsets_keeps_their_counts_as_columns():
    """A campaign's table counts injected, detected and corrected upsets and the corrupt results
    reported good across its cases, not only whether each case's criterion held."""
    from hil.campaign import UPSET_COLUMNS, _upset_columns

    account = {"requested": {"weights": 3, "outputs": 2},
               "totals": {"weights": {"applied": 3, "detected": 2, "corrected": 3},
                          "outputs": {"applied": 2, "detected": 2, "corrected": 2}},
               "batches": {"corrupt_reported_good": 1, "corrupt_unchecked": 4}}
    row = _upset_columns(account)
    assert tuple(row) == UPSET_COLUMNS
    assert list(row.values()) == [5, 5, 4, 5, 1, 4]
    assert _upset_columns(None) == {} and _upset_columns({}) == {}  # a case that asked for none: no columns


@pytest.mark.req("HIL-009")
def test_a_campaign_moved_elsewhere_with_its_files_is_the_same_campaign(tmp_path):
    """Found in review: the inputs were keyed by absolute path, so a checkout moved (or seen from another host)
    was another campaign, and its resume refused."""
    import shutil

    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        shutil.copy(ROOT / "hil" / "data" / "profiles" / "sso_550.parquet", tmp_path / where / "p.parquet")
        write(tmp_path / where / "sc.toml", 'name = "p"\nprofile = "p.parquet"\nduration_s = 300\nstep_s = 10\n')
        write(tmp_path / where / "c.toml", 'scenario = "sc.toml"\n')
    assert load_campaign(tmp_path / "a" / "c.toml").hash == load_campaign(tmp_path / "b" / "c.toml").hash


@pytest.mark.req("HIL-009")
def test_a_changed_profile_changes_the_campaign_and_its_resume_is_refused_naming_the_file(tmp_path):
    """Found in audit: the hash a resume checks covered the campaign file and the scenario's text alone, so a
    resume after the profile changed reused cases flown with the old one. Every case's input files (its profile,
    its board profile) are in it now, listed in the manifest, and a changed one is named."""
    import shutil

    from hil.campaign import _read_manifest, _write_manifest

    profile = tmp_path / "p.parquet"
    shutil.copy(ROOT / "hil" / "data" / "profiles" / "sso_550.parquet", profile)
    write(tmp_path / "sc.toml", 'name = "p"\nprofile = "p.parquet"\nduration_s = 300\nstep_s = 10\n')
    file = write(tmp_path / "c.toml", 'scenario = "sc.toml"\n')
    before = load_campaign(file)
    assert set(before.inputs) == {"profile p.parquet", "board orin_nx_16gb"}
    out = tmp_path / "out"
    out.mkdir()
    _write_manifest(out, before, {})
    assert read_checked_json(out / "manifest.json")["inputs"] == before.inputs
    assert _read_manifest(out, load_campaign(file)) == {}  # nothing changed: it resumes
    shutil.copy(ROOT / "hil" / "data" / "profiles" / "dawn_dusk.parquet", profile)
    after = load_campaign(file)
    assert after.hash != before.hash
    with pytest.raises(CampaignError, match="input files changed: profile p.parquet"):
        _read_manifest(out, after)


_WORKER = """
import os, signal, sys, time
from hil import campaign as c
c.ORPHAN_LOOK_S, c.ORPHAN_GRACE_S = 0.1, 2.0
c._pool_worker_init()
c._in_case = True
print("flying", flush=True)
try:
    try:
        while True:
            time.sleep(0.01)  # the case
    except c._Terminated:
        if sys.argv[1] == "twice":
            os.kill(os.getpid(), signal.SIGTERM)  # the second parent-death signal, in the case's clean-up
        time.sleep(0.5)
        print("agent stopped", flush=True)  # what the case's clean-up does last
        if sys.argv[1] == "stuck":
            while True:  # a clean-up that does not end (the worst case): the watch still ends the worker
                time.sleep(0.01)
        raise
except c._Terminated:
    os._exit(143)
"""


@pytest.mark.req("HIL-009")
@pytest.mark.parametrize("how", ["twice", "stuck"])
def test_a_pool_worker_unwinds_its_case_once_and_never_outlives_its_campaign(tmp_path, how):
    """Found in audit: after kill -9 of a campaign, its workers got SIGTERM once per ending thread; the second
    landed in the case's clean-up before its agent was stopped, or escaped into the pool's loop, which went on
    waiting for work, an agent still flying ten minutes later. A worker's campaign here is a shell that dies
    at once: the worker must unwind its case whole and be gone within its grace."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    out = tmp_path / "out.txt"
    # The campaign: a shell that starts the worker and exits (as kill -9 would end it); the worker is reparented.
    subprocess.run(["sh", "-c", f'"{sys.executable}" "{script}" {how} > "{out}" 2>&1 & echo $! > "{tmp_path}/pid"; '
                    f'until grep -q flying "{out}"; do sleep 0.1; done'], cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60, check=True)
    pid = int((tmp_path / "pid").read_text())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and \
            "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]:
        time.sleep(0.1)
    try:
        gone = not Path(f"/proc/{pid}").exists() or \
            "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        assert gone, f"the worker {pid} outlived its campaign"
        assert out.read_text().splitlines() == ["flying", "agent stopped"], out.read_text()
    finally:
        try:
            os.kill(pid, signal.SIGKILL)  # the worker this test started, by its pid
        except ProcessLookupError:
            pass


@pytest.mark.req("HIL-009")
def test_an_array_index_that_is_not_an_ascii_digit_is_refused_naming_the_key(tmp_path):
    """Found in audit: "commands.\u00b2.at_s" (a superscript two: a digit to str.isdigit, not to int()) was an
    internal error, exit 3, not a refusal naming the key; a full-width one set commands[1] past the check that
    refuses a key given in two tables."""
    for index in ("\u00b2", "\uff11"):
        file = write(tmp_path / "bad.toml", f'scenario = "{SCENARIO}"\n[sweep]\n"commands.{index}.at_s" = [10]\n')
        with pytest.raises(CampaignError, match=f"commands.{index}.at_s: .*is not one of 0..1"):
            load_campaign(file)


@pytest.mark.req("HIL-009")
def test_results_are_written_whatever_values_a_sweep_gives_its_columns(tmp_path):
    """Found in audit: a seed past int64 (which TOML and the scenario take) or a sweep over an empty table made
    results.parquet raise once every case had flown: exit 3, no results and no report.html, and the same on every
    resume. Such a column is kept as text; the others keep their types."""
    import pyarrow.parquet as pq

    from hil.campaign import write_results

    file = write(tmp_path / "c.toml", f'scenario = "{SCENARIO}"\n[sweep]\nseed = [{2 ** 63}, 1]\n'
                                      'criteria = [{}]\n"battery.capacity_wh" = [40.0]\n')
    c = load_campaign(file)
    figures = {"passed": True, "status": "passed", "work_tiles": 5.0, "soc_min_pct": 50.0, "soc_end_pct": 60.0,
               "floor_violation_steps": 0, "temp_max_c": 40.0, "events": 3, "faults": 0, "sim_s": 300.0,
               "wall_s": 1.0, "error": None}
    got = [{**c.case(i).params, "case": i, **figures} for i in range(c.n_cases)]
    write_results(tmp_path, c, got)
    table = pq.read_table(tmp_path / "results.parquet").to_pylist()
    assert [r["seed"] for r in table] == [str(2 ** 63), "1"]
    assert [r["criteria"] for r in table] == ["{}", "{}"]
    assert [r["battery.capacity_wh"] for r in table] == [40.0, 40.0] and table[0]["work_tiles"] == 5.0
    assert ">c: PASS</h1>" in (tmp_path / "report.html").read_text()


def _dies_after_the_others(job: tuple[int, str]) -> int:
    """Job 4's worker dies once jobs 1 to 3 have returned; the others return (for the pool's death test)."""
    key, folder = job
    if key == 4:
        while not all((Path(folder) / str(k)).exists() for k in range(1, 4)):
            time.sleep(0.02)
        time.sleep(0.5)  # their results sent
        (Path(folder) / "dying").touch()
        os._exit(9)
    if key:
        (Path(folder) / str(key)).touch()
    return key


_FINISHED_BEFORE = """
import json, sys, time
from pathlib import Path
from hil.campaign import run_jobs
from tests.test_hil_campaign import _dies_after_the_others
folder = Path(sys.argv[1])
got = []
def done(result):
    got.append(result)
    while len(got) == 1 and not (folder / "dying").exists():  # the campaign busy with case 0 (a slow fsync)
        time.sleep(0.02)
    if len(got) == 1:
        time.sleep(1.0)  # while the pool sees the death
if __name__ == "__main__":
    run_jobs(_dies_after_the_others, [(k, str(folder)) for k in range(5)], done, "pool", workers=5,
             crashed=lambda job, why: ["crashed", job[0]])
    print(json.dumps(got))
"""


@pytest.mark.req("HIL-009")
def test_cases_that_finished_before_a_workers_death_keep_their_results(tmp_path):
    """Found in audit: a worker's death while the campaign was busy (journaling a case) turned the cases that had
    finished meanwhile, results in hand, into error rows ("its worker process died"): exit 1, and each flown
    again on resume. Only the case whose worker died gets one."""
    run = subprocess.run([sys.executable, "-c", _FINISHED_BEFORE, str(tmp_path)], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert sorted(r for r in got if isinstance(r, int)) == [0, 1, 2, 3], got
    assert [r for r in got if not isinstance(r, int)] == [["crashed", 4]], got
