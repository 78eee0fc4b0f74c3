"""The image built from the Dockerfile and run as is (no user, volume or database flags): it serves a chat
completion, writes client keys and records into its data volume, and passes its health check.

Skipped, saying why, when neither docker nor podman can build and run containers here.
AIBRIDGE_TEST_PYTHON_IMAGE names another base image (Debian with python3 and its venv module) for a machine
that cannot pull the Dockerfile's default one."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx2
import openai
import pytest

from shared.local import free_port
from tests.fake_upstream import SSEReply, text_stream
from tests.gateway import FAST_TIMEOUTS
from tests.mcp_http import ROOT

BASE_IMAGE = os.environ.get("AIBRIDGE_TEST_PYTHON_IMAGE", "python:3.11-slim")
HI = [{"role": "user", "content": "hi"}]
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def run(*command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stderr.strip() or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {result.returncode}"


def container_runtime() -> str:
    """docker or podman, whichever can run a container of the base image; else the test is skipped."""
    reasons = []
    for runtime in ("docker", "podman"):
        if shutil.which(runtime) is None:
            reasons.append(f"{runtime}: not installed")
            continue
        for step in (
            [runtime, "info"],
            [runtime, "pull", BASE_IMAGE],
            [runtime, "run", "--rm", BASE_IMAGE, "python3", "-c", "import venv"],
        ):
            if step[1] == "pull" and run(runtime, "image", "inspect", BASE_IMAGE).returncode == 0:
                continue  # there already
            result = run(*step, timeout=300)
            if result.returncode != 0:
                reasons.append(f"`{' '.join(step[:3])}`: {last_line(result)}")
                break
        else:
            return runtime
    pytest.skip("no container runtime can run the image here: " + "; ".join(reasons))


@pytest.fixture(scope="module")
def image() -> Iterator[tuple[str, str]]:
    runtime = container_runtime()
    tag = f"localhost/aibridge-test:{uuid.uuid4().hex[:8]}"
    docker_format = ["--format", "docker"] if runtime == "podman" else []  # OCI images have no HEALTHCHECK
    build = [
        runtime,
        "build",
        *docker_format,
        "--build-arg",
        f"PYTHON_IMAGE={BASE_IMAGE}",
        "-t",
        tag,
        str(ROOT),
    ]
    built = run(*build, timeout=900)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    yield runtime, tag
    run(runtime, "rmi", "-f", tag)


@pytest.mark.timeout(900)  # the build installs the dependencies
def test_the_image_serves_and_records_into_its_volume_as_is(image, redis_url, upstream):
    runtime, tag = image
    port = free_port()
    settings = {
        **FAST_TIMEOUTS,
        "AIBRIDGE_REDIS_URL": redis_url,
        "AIBRIDGE_KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}:",
        "AIBRIDGE_PORT": str(port),
        "AIBRIDGE_OPENAI_BASE_URL": upstream.base_url,
        "AIBRIDGE_OPENAI_API_KEY": "sk-upstream-test-key",
    }
    environment = [arg for name, value in settings.items() for arg in ("-e", f"{name}={value}")]
    api = f"aibridge-test-api-{uuid.uuid4().hex[:8]}"
    containers = [api]
    try:  # the host's network: the suite's Redis and the fake upstream listen on its loopback
        started = run(runtime, "run", "-d", "--name", api, "--network", "host", *environment, tag)
        assert started.returncode == 0, started.stderr
        assert run(runtime, "exec", api, "id", "-u").stdout.strip() == "10001"
        key = run(runtime, "exec", api, "aibridge", "keys", "create", "--actor", "in-a-container")
        assert key.returncode == 0, key.stderr
        worker = run(
            runtime, "run", "-d", "--network", "host", "--volumes-from", api, *environment, tag,
            "aibridge", "worker",
        )  # fmt: skip
        assert worker.returncode == 0, worker.stderr
        containers.append(worker.stdout.strip())
        wait_until(
            lambda: status(f"http://127.0.0.1:{port}/readyz") == 200, "the API and a worker", runtime, api
        )

        model, _ = upstream.scenario(SSEReply(text_stream(["from ", "the image"], usage=USAGE)))
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/openai/v1", api_key=key.stdout.strip(), max_retries=0
        )
        answer = client.chat.completions.create(model=model, messages=HI, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices) == "from the image"
        wait_until(
            lambda: "in-a-container" in run(runtime, "exec", api, "aibridge", "usage").stdout,
            "the worker's record in the shared volume",
            runtime,
            api,
        )
        wait_until(lambda: healthy(runtime, api), "a healthy API", runtime, api)
    finally:
        for container in containers:
            run(runtime, "rm", "-f", "-v", container)


def healthy(runtime: str, container: str) -> bool:
    if runtime == "podman":  # podman runs health checks when asked to (or from systemd timers)
        return run(runtime, "healthcheck", "run", container).returncode == 0
    inspect = run(runtime, "inspect", "--format", "{{.State.Health.Status}}", container)
    return inspect.stdout.strip() == "healthy"


def status(url: str) -> int | None:
    try:
        return httpx2.get(url, timeout=1).status_code
    except httpx2.HTTPError:
        return None


def wait_until(condition, what: str, runtime: str, container: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            logs = run(runtime, "logs", container)
            raise TimeoutError(f"gave up waiting for {what}:\n{logs.stdout[-4000:]}{logs.stderr[-4000:]}")
        time.sleep(0.2)
