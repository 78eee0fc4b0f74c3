"""The real coding agents the suite runs through the gateway (Claude Code, Codex): where their binaries are,
and what their sessions' records must show."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CI_INSTALLS = Path.home() / ".cache/aibridge-ci"  # where .ci/run installs them
LOCAL_INSTALLS = Path("/work/tools")


def find_agent(name: str, package: str, variable: str) -> tuple[str | None, str]:
    """The agent's binary ``name`` (npm ``package``): ``variable``'s path, then the install folders, then
    PATH; or None and why there is none."""
    if configured := os.environ.get(variable):
        if os.access(configured, os.X_OK):
            return configured, ""
        return None, f"{variable}={configured} is not an executable file"
    installs = [root / name / "node_modules/.bin" / name for root in (CI_INSTALLS, LOCAL_INSTALLS)]
    found = next((str(path) for path in installs if os.access(path, os.X_OK)), None) or shutil.which(name)
    return found, (
        f"no {name} binary: set {variable}, `npm install {package}` into {CI_INSTALLS / name} "
        f"(.ci/run does), or put `{name}` on PATH"
    )


def assert_one_injected_call(record: dict, tool: str, args: dict) -> None:
    """The interception's record holds one tool usage: the injected ``tool``, called with ``args``, that ran."""
    (usage,) = record["tool_usages"]
    assert (usage["tool"], usage["injected"], usage["args"]) == (tool, True, args)
    assert usage["invocation_error"] is None
