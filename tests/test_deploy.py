"""The Procfile run as a Procfile platform runs it, and the Dockerfile's properties that a plain `docker run`
depends on (checked without a container runtime; tests/test_container.py builds and runs the image)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import httpx2
import openai

from shared.config import Settings
from shared.local import free_port
from tests.fake_upstream import SSEReply, text_stream
from tests.gateway import FAST_TIMEOUTS
from tests.mcp_http import ROOT

HI = [{"role": "user", "content": "hi"}]


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if line.strip() and not line.startswith("#"))


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, (KEYWORD, arguments), with continued lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in instructions]


def last(keyword: str) -> str:
    return [arguments for found, arguments in dockerfile() if found == keyword][-1]


def listens_on_all_addresses(port: int) -> bool:
    """Whether a socket listens on 0.0.0.0:port (from /proc/net/tcp: state 0A is LISTEN)."""
    rows = (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
    return any(row[1] == f"00000000:{port:04X}" and row[3] == "0A" for row in rows)


def test_procfile_has_a_release_step_and_web_listens_on_port_defaulting_to_8080():
    processes = procfile()
    assert set(processes) == {"release", "web", "worker"}
    assert processes["release"].split() == ["aibridge", "db", "upgrade"]
    words = subprocess.run(  # the web line's words once the shell has expanded them, PORT unset
        ["bash", "-c", f"printf '%s\\n' {processes['web']}"],
        env={key: value for key, value in os.environ.items() if key != "PORT"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert words[:2] == ["aibridge", "api"]
    assert "--port" in words
    assert words[words.index("--port") + 1] == "8080"


def test_procfile_processes_serve_a_chat_completion_on_port(redis_url, upstream, tmp_path):
    port = free_port()
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("AIBRIDGE_")},
        **FAST_TIMEOUTS,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # where `aibridge` is
        "PORT": str(port),
        "AIBRIDGE_REDIS_URL": redis_url,
        "AIBRIDGE_KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}:",
        "AIBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'records.db'}",
        "AIBRIDGE_OPENAI_BASE_URL": upstream.base_url,
        "AIBRIDGE_OPENAI_API_KEY": "sk-upstream-test-key",
        "AIBRIDGE_AUTO_MIGRATE": "false",  # so the processes refuse to start unless `release` migrated
    }
    processes = procfile()
    release = subprocess.run(["bash", "-c", processes["release"]], env=env, capture_output=True, timeout=60)
    assert release.returncode == 0, release.stderr
    created = subprocess.run(
        ["aibridge", "keys", "create", "--actor", "procfile"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("web", "worker")}
    running = {
        name: subprocess.Popen(
            ["bash", "-c", processes[name]],
            env=env,
            stdout=logs[name],
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own, signalled as a platform would
        )
        for name in ("web", "worker")
    }
    try:
        deadline = time.monotonic() + 30
        while not _ready(port):
            exited = {name: p.returncode for name, p in running.items() if p.poll() is not None}
            output = {name: (tmp_path / f"{name}.log").read_text() for name in running}
            assert not exited, f"exited: {exited}\n{output}"
            assert time.monotonic() < deadline, f"nothing ready on $PORT={port}:\n{output}"
            time.sleep(0.1)
        assert listens_on_all_addresses(port)
        model, _ = upstream.scenario(SSEReply(text_stream(["served ", "on $PORT"])))
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/openai/v1", api_key=created.stdout.strip(), max_retries=0
        )
        stream = client.chat.completions.create(model=model, messages=HI, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "served on $PORT"
    finally:
        for process in running.values():
            os.killpg(process.pid, signal.SIGTERM)
        for name, process in running.items():  # uvicorn ends by the signal once it has shut down
            assert process.wait(30) in (0, -signal.SIGTERM), (tmp_path / f"{name}.log").read_text()
        for log in logs.values():
            log.close()


def _ready(port: int) -> bool:
    try:
        return httpx2.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx2.HTTPError:
        return False


def test_the_image_runs_as_a_user_of_its_own_with_its_database_in_a_writable_volume():
    user = last("USER").split(":")[0]
    assert user not in ("root", "0", "nobody", "65534")
    volumes = last("VOLUME")
    data = json.loads(volumes) if volumes.startswith("[") else volumes.split()
    assert len(data) == 1
    assert any(  # made in the image and handed to the user, so the volume starts out writable by it
        re.search(rf"\bmkdir (-p )?{re.escape(data[0])}\b.*\bchown {user}(:\d+)? {re.escape(data[0])}\b", run)
        for keyword, run in dockerfile()
        if keyword == "RUN"
    )
    database = dict(
        re.findall(
            r"(\w+)=(\S+)", " ".join(arguments for keyword, arguments in dockerfile() if keyword == "ENV")
        )
    )["AIBRIDGE_DATABASE_URL"]
    Settings(database_url=database)  # a URL the gateway takes
    path = Path(database.split(":///", 1)[1])
    assert path.is_absolute()
    assert path.parent == Path(data[0])


def test_the_image_command_is_the_packages_console_script_and_it_has_a_health_check():
    command = json.loads(last("CMD"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert command[0] in scripts
    assert command[1:] == ["api", "--host", "0.0.0.0"]
    assert "/healthz" in last("HEALTHCHECK")


def test_the_readme_and_the_compose_file_scale_the_same_way():
    def scale(text: str) -> list[str]:
        return re.findall(r"docker compose up .*--scale worker=\d+", text)

    readme = scale((ROOT / "README.md").read_text())
    assert readme
    assert set(scale((ROOT / "docker-compose.yml").read_text())) == set(readme)
