"""aibridge.example.toml: it loads, it names every setting, and the README points to it."""

from __future__ import annotations

import os
import re

import pytest

from shared.config import Settings, _read_toml, load_settings
from tests.mcp_http import ROOT

EXAMPLE = ROOT / "aibridge.example.toml"


@pytest.fixture(autouse=True)
def no_aibridge_environment(monkeypatch):
    for variable in [name for name in os.environ if name.startswith("AIBRIDGE_")]:
        monkeypatch.delenv(variable)


def test_the_example_loads_with_the_defaults_and_one_mcp_server():
    settings = load_settings(EXAMPLE)
    assert settings.model_dump(exclude={"mcp_servers"}) == Settings().model_dump(exclude={"mcp_servers"})
    assert [server.name for server in settings.mcp_servers] == ["demo"]


def test_every_setting_has_a_line_with_its_variable():
    text = EXAMPLE.read_text()
    before_tables = text.split("\n[", 1)[0]
    commented = set(re.findall(r"^# ([a-z_]+) = ", before_tables, re.MULTILINE))  # settings with no default
    assert set(_read_toml(EXAMPLE)) | commented == set(Settings.model_fields)
    for field in Settings.model_fields:
        assert f"AIBRIDGE_{field.upper()}" in text


def test_the_readme_points_to_the_example():
    assert "aibridge.example.toml" in (ROOT / "README.md").read_text()
