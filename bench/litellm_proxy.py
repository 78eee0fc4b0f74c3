"""LiteLLM proxy for ``bench.run``'s comparison: its virtualenv, its config and its command line.

The proxy runs from a virtualenv of its own (``.bench/litellm-venv``, created with ``pip install
'litellm[proxy]'`` when missing, or ``--litellm-python``), as one process (``--num_workers 1``: uvicorn in
the same process), with one model per API family routed to the fake upstream, no database, no callbacks,
no master key (no auth) and its logging off (``LITELLM_LOG=ERROR``, which also silences uvicorn's access
log; ``set_verbose`` and message logging off; the model cost map read from the package instead of fetched).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.processes import HOST, ROOT, log

VENV = ROOT / ".bench" / "litellm-venv"
MODEL = "bench-model"
ANTHROPIC_MODEL = "bench-claude"
INSTALL_TIMEOUT = 900.0

CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {api_base}
      api_key: sk-bench
  - model_name: {anthropic_model}
    litellm_params:
      model: anthropic/{anthropic_model}
      api_base: {anthropic_api_base}
      api_key: sk-ant-bench
litellm_settings:
  set_verbose: false
  turn_off_message_logging: true
  json_logs: false
  drop_params: true
  telemetry: false
general_settings:
  disable_spend_logs: true
  # no master key: no auth, as aibridge's loopback runs (LiteLLM refuses to start keyless without this)
  dangerously_permit_weak_or_unset_master_key: true
"""


class Unavailable(Exception):
    """LiteLLM cannot be run here; the message says why."""


def python_for(requested: str | None) -> str:
    """The interpreter to run LiteLLM with: ``requested``, else the bench's own virtualenv (created when
    missing). Raises Unavailable."""
    if requested is not None:
        python = requested
    else:
        python = str(VENV / "bin" / "python")
        if not Path(python).is_file():
            create_venv()
    return python


def create_venv() -> None:
    log(f"creating {VENV} and installing litellm[proxy] (once; a few minutes)")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "litellm[proxy]"]
        subprocess.run(pip, check=True, timeout=INSTALL_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        raise Unavailable(f"could not create {VENV} with litellm[proxy]: {exc}") from None


def version(python: str) -> str:
    """The version of LiteLLM that ``python`` has (its proxy extra included). Raises Unavailable."""
    # the distributions only (importing litellm takes seconds): litellm, and two that its proxy extra brings
    code = "import importlib.metadata as m; m.version('fastapi'); m.version('uvicorn'); print(m.version('litellm'))"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise Unavailable(f"{python} cannot import litellm's proxy ({type(exc).__name__})") from None
    return done.stdout.strip()


def write_config(directory: Path, upstream_url: str, anthropic_url: str) -> Path:
    """The proxy's config: ``MODEL`` routed to ``upstream_url`` as an OpenAI provider, ``ANTHROPIC_MODEL`` to
    ``anthropic_url`` as an Anthropic one (its ``/v1/messages``)."""
    path = directory / "litellm.yaml"
    config = CONFIG.format(
        model=MODEL, api_base=upstream_url, anthropic_model=ANTHROPIC_MODEL, anthropic_api_base=anthropic_url
    )
    path.write_text(config)
    return path


def proxy_args(config: Path, port: int) -> list[str]:
    """The interpreter's arguments that start the proxy."""
    return [
        *("-m", "litellm.proxy.proxy_cli", "--config", str(config)),
        *("--host", HOST, "--port", str(port), "--num_workers", "1"),
    ]


def proxy_env() -> dict[str, str]:
    env = {
        name: value for name, value in os.environ.items() if not name.startswith(("LITELLM_", "DATABASE_URL"))
    }
    env.update(LITELLM_LOG="ERROR", LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False")
    return env
