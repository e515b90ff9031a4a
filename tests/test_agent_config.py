"""The agent's configuration: threshold levels and profile names, validated with errors
that name the file, the line, the key and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.app import load_agent
from agent.config import AgentConfig
from enoc.config import ConfigError, load_config

BASE = "agent_id: nyc-1\nsite: nyc\nspool: {path: ./spool}\n"


def test_thresholds_default_to_the_documented_levels(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(BASE)
    rules = {
        r.metric: (r.enter, r.leave, r.polls)
        for r in load_config(path, AgentConfig).thresholds.rules()
    }
    assert rules == {
        "in_utilization": (90, 80, 3),
        "out_utilization": (90, 80, 3),
        "cpu": (90, 75, 3),
        "memory": (95, 90, 3),
        "in_errors_per_s": (10, 1, 3),
    }


def test_thresholds_may_be_given_in_part(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(BASE + "thresholds:\n  cpu: {enter: 97, polls: 5}\n  errors: {leave: 0.5}\n")
    config = load_config(path, AgentConfig)
    rules = {r.metric: r for r in config.thresholds.rules()}
    assert (rules["cpu"].enter, rules["cpu"].leave, rules["cpu"].polls) == (97, 75, 5)
    assert (rules["in_errors_per_s"].enter, rules["in_errors_per_s"].leave) == (10, 0.5)
    assert rules["cpu"].severity == "major" and rules["in_errors_per_s"].severity == "warning"


def test_bad_thresholds_name_file_line_key_and_what_was_expected(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        BASE
        + "thresholds:\n"
        + "  cpu: {enter: 80, leave: 85}\n"
        + "  memory: {enter: 120}\n"
        + "  errors: {polls: 0}\n"
        + "  utilization: {enter: high}\n"
        + "  disk: {enter: 90}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, AgentConfig)
    lines = str(caught.value).splitlines()
    assert f"{path}:5: thresholds.cpu: expected leave at or below enter (80), got 85" in lines
    assert (
        f"{path}:6: thresholds.memory: expected enter between 0 and 100 (a percentage), got 120"
        in lines
    )
    assert f"{path}:7: thresholds.errors: expected polls of at least 1, got 0" in lines
    assert f'{path}:8: thresholds.utilization.enter: expected a number, got "high"' in lines
    assert any(line.startswith(f"{path}:9: thresholds.disk: unknown key") for line in lines)


def test_a_device_naming_an_unknown_profile_is_refused(tmp_path: Path) -> None:
    inventory = tmp_path / "devices.yaml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "credentials": {"v2": {"version": "2c", "community": "public"}},
                "devices": [
                    {"name": "a", "address": "127.0.0.2", "credentials": "v2"},
                    {"name": "b", "address": "127.0.0.3", "credentials": "v2", "profile": "edge"},
                    {"name": "c", "address": "127.0.0.4", "credentials": "v2", "profile": "nope"},
                ],
            }
        )
    )
    path = tmp_path / "agent.yaml"
    path.write_text(BASE + f"inventory: {inventory}\nprofiles:\n  edge: {{groups: [interfaces]}}\n")
    with pytest.raises(ConfigError) as caught:
        load_agent(path)
    (line,) = str(caught.value).splitlines()
    # the line of the included file where that device's profile is written
    number = next(
        i for i, text in enumerate(inventory.read_text().splitlines(), 1) if "nope" in text
    )
    assert line.startswith(
        f"{inventory}:{number}: devices[2].profile: unknown profile 'nope' (known: "
    )
    assert "edge" in line and "router" in line
    # the same device inline in the agent config is found there
    path.write_text(
        BASE
        + "credentials: {v2: {version: '2c', community: public}}\n"
        + "devices: [{name: c, address: 127.0.0.4, credentials: v2, profile: nope}]\n"
    )
    with pytest.raises(
        ConfigError, match=r"agent\.yaml:\d+: devices\[0\]\.profile: unknown profile"
    ):
        load_agent(path)
