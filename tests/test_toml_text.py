"""Every reader of a TOML file refuses nesting past the parser's recursion as bad TOML, naming its file."""

from __future__ import annotations

import time

import pytest

from flight import toml_text
from flight.config import ConfigError, load_config
from flight.link.definitions import DICTIONARY
from ground.schedule_file import ScheduleFileError, parse_schedule
from ground.server_config import ServerConfigError, load_server_config
from hil.scenario import ScenarioError, load_scenario

DEEP = "x = " + "[" * 3000 + "]" * 3000 + "\n"  # 6 KB, well inside every reader's size bound


def test_nesting_past_the_recursion_limit_is_a_toml_error():
    with pytest.raises(toml_text.TOMLDecodeError, match="nested too deeply"):
        toml_text.loads(DEEP)
    with pytest.raises(toml_text.TOMLDecodeError, match="nested too deeply"):
        toml_text.loads("x = " + "{ a = " * 3000 + "1" + " }" * 3000 + "\n")
    assert toml_text.loads("x = [[1], [2]]") == {"x": [[1], [2]]}


HOSTILE = ["", 'a"b', "a'b", "'''", '"""', "\\", "\\u0041", "\x00", "\x1f", "\x7f", "\r\n", "\t", "\u2028", "\ufeff",
           "\U0001F600", "# not a comment", "]", "key\nother = 1", "a\x08b"]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_written_by_tomli_w_read_back_the_same(text):
    """The users file and the harness's agent configuration are written with tomli_w and read here: a string
    as a value, a key and nested, quotes, escapes, controls and line breaks included, comes back as written."""
    import tomli_w

    for doc in ({"k": text}, {text or "e": 1}, {"t": {text or "e": {"v": text}}}, {"a": [text, {"x": text}]}):
        assert toml_text.loads(tomli_w.dumps(doc)) == doc


def test_a_whole_number_past_pythons_digit_limit_is_a_toml_error_in_every_reader(tmp_path):
    """Found in audit: tomllib's ValueError for an integer of over 4300 digits raised out of the readers."""
    huge = "9" * 5000
    with pytest.raises(toml_text.TOMLDecodeError, match="4300 digits"):
        toml_text.loads(f"x = {huge}\n")
    path = tmp_path / "agent.toml"
    path.write_text(f"[rates]\nhk_period_s = {huge}\n")
    with pytest.raises(ConfigError, match=r"agent\.toml.*4300 digits"):
        load_config(path)
    scenario = tmp_path / "s.toml"
    scenario.write_text(f"name = \"s\"\nduration_s = {huge}\n")
    with pytest.raises(ScenarioError, match="4300 digits"):
        load_scenario(scenario)


@pytest.mark.req("AGT-018")
def test_the_agents_configuration_nested_too_deeply_is_refused_naming_the_file(tmp_path):
    """Found in audit: a RecursionError traceback out of `sunlit-flight run --config`."""
    path = tmp_path / "agent.toml"
    path.write_text("[link]\n" + DEEP)
    with pytest.raises(ConfigError, match=r"agent\.toml.*nested too deeply"):
        load_config(path)


def test_the_ground_readers_refuse_nesting_too_deep_naming_the_file(tmp_path):
    """Found in audit: the server's configuration, a schedule file and a HIL scenario raised RecursionError."""
    path = tmp_path / "deep.toml"
    path.write_text(DEEP)
    with pytest.raises(ServerConfigError, match=r"deep\.toml.*nested too deeply"):
        load_server_config(path, DICTIONARY)
    with pytest.raises(ScheduleFileError, match=r"deep\.toml: not valid TOML: .*nested too deeply"):
        parse_schedule(DEEP, time.time(), str(path))
    with pytest.raises(ScenarioError, match=r"deep\.toml.*nested too deeply"):
        load_scenario(path)


def test_a_retention_policy_nested_too_deep_not_utf8_or_huge_is_refused_naming_the_file(tmp_path):
    """Found in audit: `archive retain --policy` raised RecursionError on deep nesting, said bytes that are not
    UTF-8 without the file's name, and read a file (or a device) of any size whole."""
    from ground.archive_cli import POLICY_MAX_BYTES, _load_policy

    path = tmp_path / "retention.toml"
    for body, words in ((DEEP.encode(), "not TOML: arrays or tables nested too deeply"),
                        (b"[retention]\nx = '\xff'\n", "not TOML: 'utf-8' codec"),
                        (b"#" * (POLICY_MAX_BYTES + 1), f"larger than {POLICY_MAX_BYTES} bytes")):
        path.write_bytes(body)
        with pytest.raises(ValueError, match=f"--policy {path}: {words}"):
            _load_policy(str(path))


def test_a_campaign_or_users_file_nested_too_deep_is_refused_naming_the_file(tmp_path):
    """Found in audit: `sunlit-hil campaign` and the ground server's users file raised RecursionError."""
    from ground.auth import UserFileError, UserStore
    from hil.campaign import CampaignError, load_campaign

    campaign = tmp_path / "deep_campaign.toml"
    campaign.write_text(DEEP)
    with pytest.raises(CampaignError, match=r"deep_campaign\.toml: not valid TOML: .*nested too deeply"):
        load_campaign(campaign)
    campaign.write_text('name = "c"\nscenario = "base.toml"\n')
    (tmp_path / "base.toml").write_text(DEEP)
    with pytest.raises(CampaignError, match=r"scenario: .*base\.toml is not valid TOML: .*nested too deeply"):
        load_campaign(campaign)
    users = tmp_path / "users.toml"
    users.write_text(DEEP)
    users.chmod(0o600)
    with pytest.raises(UserFileError, match=r"users\.toml: not valid TOML: .*nested too deeply"):
        UserStore.load(users)


def test_a_scenario_or_campaign_that_is_no_regular_file_or_too_large_is_refused_unread(tmp_path):
    """Found in audit: `sunlit-hil run /dev/zero` grew to a MemoryError (exit 3), and a FIFO was waited on for
    good; a scenario or campaign is read bounded, a FIFO or a device refused unread, naming the file."""
    import os

    from hil.campaign import CampaignError, load_campaign
    from hil.scenario import MAX_SCENARIO_BYTES

    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    big = tmp_path / "big.toml"
    big.write_text("#" * (MAX_SCENARIO_BYTES + 1))
    for path, words in ((fifo, "not a regular file"), (big, f"over the limit of {MAX_SCENARIO_BYTES} bytes")):
        with pytest.raises(ScenarioError, match=f"{path}: no scenario file: .*{words}"):
            load_scenario(path)
        with pytest.raises(CampaignError, match=f"{path}: no campaign file: .*{words}"):
            load_campaign(path)
    campaign = tmp_path / "c.toml"
    campaign.write_text('name = "c"\nscenario = "fifo.toml"\n')
    with pytest.raises(CampaignError, match="scenario: .*fifo.toml: no scenario file: not a regular file"):
        load_campaign(campaign)
