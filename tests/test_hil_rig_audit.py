"""What a rig operator met writing campaigns and reading their folders (found in audit): a campaign that could add
no fault to its scenario, a campaign name that wrote to the terminal as it liked, an integers draw that drew
fractions, and a run's verdict beside a campaign's (or a run's report over a campaign's). In process: nothing
here flies an agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.campaign import CampaignError, load_campaign, run_campaign
from hil.scenario import ScenarioError, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "hil" / "scenarios" / "sso_one_orbit.toml"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.req("HIL-009")
def test_a_campaign_sets_a_list_its_scenario_lacks_such_as_its_faults(tmp_path):
    """[set] faults = [...] was refused as "the name of a result column", and faults.0.at_s has nothing to index
    in a scenario without faults: no campaign could fly its scenario with a fault. A key [set] gives is no column."""
    assert "[[faults]]" not in SCENARIO.read_text()
    file = write(tmp_path / "c.toml", f'scenario = "{SCENARIO}"\n[set]\nduration_s = 600\n'
                                      '[[set.faults]]\nat_s = 120\nkind = "reboot"\n')
    case = load_campaign(file).case(0)
    sc = parse_scenario(case.scenario, "c.toml", base_dir=SCENARIO.parent)
    assert [(f.kind, f.at_s) for f in sc.faults] == [("reboot", 120.0)]
    assert "faults" not in case.params  # not a column: the result's own faults count keeps its name
    # Varied, it would be a column named as the result's count: still refused, saying what to do instead.
    swept = write(tmp_path / "s.toml",
                  f'scenario = "{SCENARIO}"\n[sweep]\nfaults = [[], [{{at_s = 1, kind = "reboot"}}]]\n')
    with pytest.raises(CampaignError, match=r"sweep\.faults: is the name of a result column.*give it in \[set\]"):
        load_campaign(swept)


@pytest.mark.req("HIL-009")
def test_a_campaign_name_that_is_not_printable_is_refused_naming_the_key(tmp_path):
    """It was printed as it was: an escape sequence, or a line break and a line of its own saying PASS."""
    file = write(tmp_path / "c.toml", f'name = "x\\u001b[31m\\nall: PASS"\nscenario = "{SCENARIO}"\n')
    with pytest.raises(CampaignError, match=r"c\.toml: name: .*not printable"):
        load_campaign(file)


@pytest.mark.req("HIL-009")
def test_an_integers_draw_is_clipped_to_whole_numbers_only(tmp_path):
    """clip = [1500.5, 2000.5] on an integers draw gave 2000.5 and 1500.5, an integers draw that was none."""
    body = (f'scenario = "{SCENARIO}"\nseed = 1\ncases = 8\n[dispersion]\n'
            '"compute.tiles_per_s_at_maxn" = {{ integers = [1000, 3000], clip = [{lo}, {hi}] }}\n')
    with pytest.raises(CampaignError, match=r"dispersion\.compute\.tiles_per_s_at_maxn: clip: give whole numbers"):
        load_campaign(write(tmp_path / "bad.toml", body.format(lo=1500.5, hi=2000.5)))
    c = load_campaign(write(tmp_path / "good.toml", body.format(lo=1500, hi=2000)))
    drawn = [c.case(i).params["compute.tiles_per_s_at_maxn"] for i in range(c.n_cases)]
    assert all(isinstance(v, int) and 1500 <= v <= 2000 for v in drawn), drawn


@pytest.mark.req("HIL-003", "HIL-009")
def test_a_campaign_refuses_a_folder_holding_a_runs_verdict(tmp_path):
    """A campaign run in a folder `sunlit-hil run --report` wrote left that run's summary.json and junit.xml (PASS)
    beside its own results, which failed: a CI reading the folder's junit.xml saw a pass. Refused before any case."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "junit.xml").write_text('<testsuite failures="0"/>')
    c = load_campaign(write(tmp_path / "c.toml", f'scenario = "{SCENARIO}"\n[set]\nduration_s = 300\n'))
    with pytest.raises(CampaignError, match=r"holds a run's report \(junit\.xml.*pick another folder \(--out\)"):
        run_campaign(c, out, workers=1, progress=False)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["junit.xml"]  # nothing written


@pytest.mark.req("HIL-003", "HIL-009")
def test_a_run_refuses_a_folder_holding_a_campaigns_results(tmp_path, capsys):
    """`sunlit-hil run --report` on a campaign's folder replaced its report.html with the run's and put a
    summary.json beside its results: exit 2 now, naming the folder, before anything flies or is removed."""
    from hil.cli import main

    out = tmp_path / "campaign"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    (out / "report.html").write_text("the campaign's")
    assert main(["run", str(SCENARIO), "--report", str(out)]) == 2
    assert f"{out}: holds a campaign's results (manifest.json)" in capsys.readouterr().err
    assert (out / "report.html").read_text() == "the campaign's"
    assert not (out / "summary.json").exists()
    from hil.run import run_scenario

    with pytest.raises(ScenarioError, match="holds a campaign's results"):
        run_scenario(SCENARIO, out, quiet=True)
    assert not (out / "summary.json").exists() and not (out / "junit.xml").exists()


@pytest.mark.req("HIL-007")
def test_a_relative_profile_found_both_from_the_working_directory_and_the_scenarios_folder_is_refused(
        tmp_path, monkeypatch):
    """The same scenario file flew the profile the working directory gave (all eclipse) from one folder and the one
    beside it (all sunlight) from another, and its report said neither: refused now, naming both."""
    from hil.scenario import load_scenario

    (tmp_path / "scen").mkdir()
    for path, sun in ((tmp_path / "p.csv", 0.0), (tmp_path / "scen" / "p.csv", 1.0)):
        path.write_text("time_s,shadow_factor,solar_power_w\n"
                        + "".join(f"{t},{sun},{60.0 * sun}\n" for t in range(0, 610, 10)))
    scenario = write(tmp_path / "scen" / "x.toml", 'profile = "p.csv"\nduration_s = 600\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ScenarioError, match=r"x\.toml: profile: 'p\.csv' names two files, .*p\.csv \(from the "
                                            r"working directory\) and .*p\.csv \(from the scenario's folder\)"):
        load_scenario(scenario)
    monkeypatch.chdir(tmp_path / "scen")  # the same file both ways: no doubt which
    assert load_scenario(scenario).profile.resolve() == (tmp_path / "scen" / "p.csv").resolve()


class _ReaderGone:
    """stdout whose reader went away (``sunlit-hil run ... | head -1``)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self) -> int:
        import io

        raise io.UnsupportedOperation("no file")


@pytest.mark.req("HIL-003", "HIL-007")
def test_a_run_keeps_its_verdicts_exit_code_when_its_reader_goes_and_its_summary_names_the_profile_and_seed(
        tmp_path, monkeypatch):
    """`sunlit-hil run ... | head -1`: a run that passed exited 3, "internal error: BrokenPipeError". And its
    summary and page said which scenario file, not which profile file it flew nor the seed."""
    import json
    import sys

    from hil.cli import main

    profile = ROOT / "hil" / "data" / "profiles" / "sso_550.parquet"
    scenario = write(tmp_path / "naive.toml", f'profile = "{profile}"\nduration_s = 60\nseed = 42\nagent = "naive"\n')
    monkeypatch.setattr(sys, "stdout", _ReaderGone())
    assert main(["run", str(scenario), "--report", str(tmp_path / "r")]) == 0
    assert main(["replay", str(profile)]) == 0
    body = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert body["passed"] is True and body["profile"] == str(profile.resolve()) and body["seed"] == 42
    assert f"Profile: <code>{profile.resolve()}</code>, seed 42." in (tmp_path / "r" / "report.html").read_text()


@pytest.mark.req("HIL-003")
def test_a_replay_refused_its_flight_prints_no_summary_a_script_could_take_for_its_result(tmp_path, capsys):
    """`sunlit-hil replay P --report R --step-s nan | jq .` printed the profile's summary, then was refused (exit 2):
    a script reading stdout took the refused flight's output for a replay's. The flight's arguments (its step, a
    report folder it cannot write) are checked before anything is printed."""
    from hil.cli import main

    profile = ROOT / "hil" / "data" / "profiles" / "sso_550.parquet"
    assert main(["replay", str(profile), "--report", str(tmp_path / "r"), "--step-s", "nan"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--step-s nan: give a step above 0 s" in err
    blocked = write(tmp_path / "file", "")  # a file where the report's folder would be
    assert main(["replay", str(profile), "--report", str(blocked / "r")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"--report {blocked / 'r'}: cannot write there" in err
    assert main(["replay", str(profile)]) == 0 and '"samples"' in capsys.readouterr().out  # no flight: the summary
