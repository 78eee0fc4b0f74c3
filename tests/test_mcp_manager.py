"""McpToolManager against real MCP servers: tests/mcp_server.py over streamable HTTP (a subprocess on a free
port) and over stdio, and a published server when one can run here. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from shared.local import free_port
from shared.mcp.config import McpServerConfig
from shared.mcp.manager import McpToolManager
from shared.mcp.tools import MAX_TOOL_NAME, McpTool, ToolCallError, injected_name
from tests.mcp_http import ROOT, HttpServer

STDIO: dict[str, Any] = {
    "command": sys.executable,
    "args": ["-m", "tests.mcp_server", "--stdio"],
    "env": {"PYTHONPATH": str(ROOT)},
}
TOOLS = ["echo", "add", "slow", "fail", "coder_list_workspaces", "add_tool"]
SECRET = "s3cret-t0ken"


@pytest.fixture(scope="module")
def http_server() -> Iterator[HttpServer]:
    """Shared by the tests that do not change it (no add_tool, no kill)."""
    server = HttpServer().start()
    yield server
    server.kill()


def run(coro: Any, timeout: float = 30) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@contextlib.asynccontextmanager
async def running(servers: list[dict[str, Any]], **options: Any) -> AsyncIterator[McpToolManager]:
    options.setdefault("call_timeout", 10.0)
    options.setdefault("connect_timeout", 10.0)
    manager = McpToolManager([McpServerConfig(**server) for server in servers], **options)
    await manager.start()
    try:
        yield manager
    finally:
        await manager.close()


async def eventually(predicate: Callable[[], object], within: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            pytest.fail(f"{what}: not within {within} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def server_tools(manager: McpToolManager, server: str) -> list[str]:
    return [tool.name for tool in manager.tools() if tool.server == server]


def tool(manager: McpToolManager, name: str) -> McpTool:
    found = manager.get(name)
    assert found is not None, f"{name} not offered; offered: {[t.injected_name for t in manager.tools()]}"
    return found


def stdio_children() -> list[int]:
    """This process's children running the stdio test server (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"tests.mcp_server --stdio" in cmdline:
            found.append(int(entry))
    return found


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


# -- listing ----------------------------------------------------------------------------------------------


def test_tools_listed_with_injected_names_and_openai_shape(http_server: HttpServer) -> None:
    async def scenario() -> None:
        async with running([{"name": "test", "url": http_server.url}, {"name": "coder", **STDIO}]) as manager:
            names = [t.injected_name for t in manager.tools()]
            assert names == [f"bmcp_test_{n}" for n in TOOLS] + [f"bmcp_coder_{n}" for n in TOOLS]

            echo = tool(manager, "bmcp_test_echo")
            assert (echo.server, echo.server_url, echo.name) == ("test", http_server.url, "echo")
            shape = echo.as_openai_tool()
            assert shape["type"] == "function"
            function = shape["function"]
            assert function["name"] == "bmcp_test_echo"
            assert function["description"] == "Return the text unchanged."
            assert function["strict"] is False
            assert function["parameters"]["type"] == "object"
            assert function["parameters"]["required"] == ["text"]
            assert function["parameters"]["properties"]["text"]["type"] == "string"
            assert set(function["parameters"]) == {"type", "properties", "required"}  # title etc. dropped

            workspaces = tool(manager, "bmcp_coder_coder_list_workspaces")
            assert workspaces.server_url == f"stdio:{sys.executable} -m tests.mcp_server --stdio"
            parameters = workspaces.as_openai_tool()["function"]["parameters"]
            assert parameters["required"] == []
            assert set(parameters["properties"]) == {"owner"}

            assert manager.get("bmcp_test_nope") is None

    run(scenario())


def test_injected_name_and_schema_without_properties() -> None:
    assert injected_name("coder", "coder_list_workspaces") == "bmcp_coder_coder_list_workspaces"
    bare = McpTool("s", "http://x", "t", "bmcp_s_t", None, {"type": "object"})
    assert bare.as_openai_tool() == {
        "type": "function",
        "function": {
            "name": "bmcp_s_t",
            "description": "",
            "parameters": {"type": "object", "properties": {}, "required": []},
            "strict": False,
        },
    }


# -- calls ------------------------------------------------------------------------------------------------


def test_calls_return_the_result_in_wire_shape(http_server: HttpServer) -> None:
    async def scenario() -> None:
        async with running([{"name": "test", "url": http_server.url}, {"name": "coder", **STDIO}]) as manager:
            for server in ("test", "coder"):
                echoed = await manager.call(tool(manager, f"bmcp_{server}_echo"), {"text": "hi"})
                assert echoed == {
                    "content": [{"type": "text", "text": "hi"}],
                    "structuredContent": {"result": "hi"},
                    "isError": False,
                }
                added = await manager.call(tool(manager, f"bmcp_{server}_add"), {"a": 2, "b": 3})
                assert added["structuredContent"] == {"result": 5}
            listed = await manager.call(tool(manager, "bmcp_coder_coder_list_workspaces"), {"owner": "me"})
            assert listed["structuredContent"]["count"] == 2
            assert listed["isError"] is False

            # many calls at once on each session
            calls = [
                manager.call(tool(manager, f"bmcp_{server}_add"), {"a": i, "b": 1})
                for i in range(25)
                for server in ("test", "coder")
            ]
            results = await asyncio.gather(*calls)
            assert [r["structuredContent"]["result"] for r in results] == [
                i + 1 for i in range(25) for _ in "ab"
            ]

    run(scenario())


def test_failing_tool_raises_with_its_message(http_server: HttpServer) -> None:
    async def scenario() -> None:
        async with running([{"name": "test", "url": http_server.url}, {"name": "coder", **STDIO}]) as manager:
            for server in ("test", "coder"):
                with pytest.raises(ToolCallError, match="disk on fire"):
                    await manager.call(tool(manager, f"bmcp_{server}_fail"), {"message": "disk on fire"})
            with pytest.raises(ToolCallError, match="validation error"):  # arguments the tool rejects
                await manager.call(tool(manager, "bmcp_test_add"), {"a": "x"})

    run(scenario())


def test_call_timeout(http_server: HttpServer) -> None:
    async def scenario() -> None:
        servers = [{"name": "test", "url": http_server.url}, {"name": "coder", **STDIO}]
        async with running(servers, call_timeout=0.5) as manager:
            for server in ("test", "coder"):
                start = time.monotonic()
                with pytest.raises(ToolCallError, match=r"timed out after 0\.5 s"):
                    await manager.call(tool(manager, f"bmcp_{server}_slow"), {"seconds": 10})
                assert time.monotonic() - start < 1.5
                # the session is still fine
                echoed = await manager.call(tool(manager, f"bmcp_{server}_echo"), {"text": "after"})
                assert echoed["structuredContent"] == {"result": "after"}

    run(scenario())


def test_calls_may_outlast_the_connect_timeout(http_server: HttpServer) -> None:
    async def scenario() -> None:
        servers = [{"name": "test", "url": http_server.url}, {"name": "coder", **STDIO}]
        async with running(servers, call_timeout=10, connect_timeout=2.5) as manager:
            slow = [tool(manager, f"bmcp_{server}_slow") for server in ("test", "coder")]
            for result in await asyncio.gather(*(manager.call(t, {"seconds": 3}) for t in slow)):
                assert result["structuredContent"] == {"result": "slept 3.0"}

    run(scenario())


def test_cancelling_a_call_returns_promptly(http_server: HttpServer) -> None:
    async def scenario() -> None:
        async with running([{"name": "test", "url": http_server.url}, {"name": "coder", **STDIO}]) as manager:
            for server in ("test", "coder"):
                baseline = len(asyncio.all_tasks())
                task = asyncio.create_task(
                    manager.call(tool(manager, f"bmcp_{server}_slow"), {"seconds": 20})
                )
                await asyncio.sleep(0.3)
                start = time.monotonic()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert time.monotonic() - start < 1.0
                # nothing of the call is left running on our side (the POST, the waiter)
                await eventually(lambda b=baseline: len(asyncio.all_tasks()) <= b, 2, "call tasks gone")
                echoed = await manager.call(tool(manager, f"bmcp_{server}_echo"), {"text": "still"})
                assert echoed["structuredContent"] == {"result": "still"}

    run(scenario())


# -- servers going away and coming back -------------------------------------------------------------------


def test_server_down_at_start_is_retried(http_server: HttpServer, caplog: pytest.LogCaptureFixture) -> None:
    late = HttpServer()  # its port is free: nothing listens yet

    async def scenario() -> None:
        start = time.monotonic()
        servers = [{"name": "test", "url": http_server.url}, {"name": "late", "url": late.url}]
        async with running(servers, connect_timeout=3) as manager:
            assert time.monotonic() - start < 3
            assert server_tools(manager, "test") == TOOLS
            assert server_tools(manager, "late") == []
            await asyncio.to_thread(late.start)
            await eventually(lambda: manager.get("bmcp_late_echo"), 10, "late server's tools")
            echoed = await manager.call(tool(manager, "bmcp_late_echo"), {"text": "late"})
            assert echoed["structuredContent"] == {"result": "late"}

    caplog.set_level(logging.DEBUG, logger="shared.mcp.manager")
    try:
        run(scenario())
    finally:
        late.kill()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "'late'" in r.getMessage()]
    assert len(warnings) == 1  # one line for the outage, not one per attempt
    assert "unavailable" in warnings[0].getMessage()
    assert warnings[0].exc_info is None


def test_http_server_killed_and_restarted() -> None:
    server = HttpServer().start()

    async def scenario() -> None:
        async with running([{"name": "srv", "url": server.url}], connect_timeout=3) as manager:
            echo = tool(manager, "bmcp_srv_echo")
            await asyncio.to_thread(server.kill)
            await eventually(lambda: not server_tools(manager, "srv"), 5, "tools of a killed server dropped")
            with pytest.raises(ToolCallError, match="not connected"):
                await manager.call(echo, {"text": "x"})
            await asyncio.to_thread(server.start)
            await eventually(lambda: server_tools(manager, "srv") == TOOLS, 10, "tools back after restart")
            echoed = await manager.call(tool(manager, "bmcp_srv_echo"), {"text": "back"})
            assert echoed["structuredContent"] == {"result": "back"}

    try:
        run(scenario())
    finally:
        server.kill()


def test_http_server_killed_during_a_call() -> None:
    server = HttpServer().start()

    async def scenario() -> None:
        async with running([{"name": "srv", "url": server.url}], connect_timeout=3) as manager:
            call = asyncio.create_task(manager.call(tool(manager, "bmcp_srv_slow"), {"seconds": 20}))
            await asyncio.sleep(0.3)
            await asyncio.to_thread(server.kill)
            with pytest.raises(ToolCallError):
                await asyncio.wait_for(call, 3)
            await asyncio.to_thread(server.start)
            await eventually(lambda: server_tools(manager, "srv") == TOOLS, 10, "tools back after restart")

    try:
        run(scenario())
    finally:
        server.kill()


@needs_proc
def test_stdio_process_killed_is_restarted() -> None:
    async def scenario() -> None:
        async with running([{"name": "coder", **STDIO}], connect_timeout=5) as manager:
            (pid,) = stdio_children()
            os.kill(pid, signal.SIGKILL)
            await eventually(lambda: not server_tools(manager, "coder"), 5, "tools of a dead process dropped")
            await eventually(lambda: server_tools(manager, "coder") == TOOLS, 10, "tools back after respawn")
            assert stdio_children() != [pid]
            echoed = await manager.call(tool(manager, "bmcp_coder_echo"), {"text": "respawned"})
            assert echoed["structuredContent"] == {"result": "respawned"}

    run(scenario())


@needs_proc
def test_close_stops_sessions_and_stdio_processes(http_server: HttpServer) -> None:
    async def scenario() -> None:
        before = asyncio.all_tasks()
        manager = McpToolManager(
            [
                McpServerConfig(name="test", url=http_server.url),
                McpServerConfig(name="coder", **STDIO),
                McpServerConfig(name="down", url=f"http://127.0.0.1:{free_port()}/mcp"),
            ],
            call_timeout=10,
            connect_timeout=5,
        )
        await manager.start()
        assert len(stdio_children()) == 1
        start = time.monotonic()
        await manager.close()
        assert time.monotonic() - start < 5
        assert manager.tools() == []
        assert stdio_children() == []
        assert asyncio.all_tasks() == before

    run(scenario())


# -- tool list changes ------------------------------------------------------------------------------------


def test_list_changed_over_stdio() -> None:
    async def scenario() -> None:
        async with running([{"name": "coder", **STDIO}]) as manager:
            await manager.call(tool(manager, "bmcp_coder_add_tool"), {})
            await eventually(lambda: manager.get("bmcp_coder_late_tool"), 5, "late_tool listed")
            assert server_tools(manager, "coder") == [*TOOLS, "late_tool"]
            result = await manager.call(tool(manager, "bmcp_coder_late_tool"), {})
            assert result["content"] == [{"type": "text", "text": "late"}]

    run(scenario())


def test_list_changed_over_http() -> None:
    server = HttpServer().start()  # its own: add_tool changes it

    async def scenario() -> None:
        async with running([{"name": "srv", "url": server.url}]) as manager:
            await manager.call(tool(manager, "bmcp_srv_add_tool"), {})
            await eventually(lambda: manager.get("bmcp_srv_late_tool"), 5, "late_tool listed")

    try:
        run(scenario())
    finally:
        server.kill()


def test_handshake_era_server(caplog: pytest.LogCaptureFixture) -> None:
    """A server without server/discover (the 2025 protocol): list_changed arrives as a plain notification,
    and with no change stream to watch a restart is noticed by the periodic ping."""
    server = HttpServer("--legacy").start()

    async def scenario() -> None:
        async with running([{"name": "old", "url": server.url}], health_interval=0.3) as manager:
            await manager.call(tool(manager, "bmcp_old_add_tool"), {})
            await eventually(lambda: manager.get("bmcp_old_late_tool"), 5, "late_tool listed")
            await asyncio.to_thread(server.kill)
            await asyncio.to_thread(server.start)  # a new process: the old session id is unknown to it
            await eventually(
                lambda: server_tools(manager, "old") == TOOLS, 10, "reconnected to the new process"
            )

    caplog.set_level(logging.INFO, logger="shared.mcp.manager")
    try:
        run(scenario())
    finally:
        server.kill()
    connected = [r.getMessage() for r in caplog.records if "connected (protocol" in r.getMessage()]
    assert connected
    assert all("protocol 2025-" in line for line in connected)


# -- filters and names ------------------------------------------------------------------------------------


def test_allow_and_deny_filters(http_server: HttpServer) -> None:
    async def scenario() -> None:
        servers = [
            {"name": "both", "url": http_server.url, "allow": "^(echo|add|slow)$", "deny": "^add$"},
            {"name": "deny", "url": http_server.url, "deny": "^(fail|slow|add_tool)$"},
            {"name": "allow", "url": http_server.url, "allow": "list"},  # re.search: unanchored
            {"name": "nothing", "url": http_server.url, "allow": "echo", "deny": "echo"},
        ]
        async with running(servers) as manager:
            assert server_tools(manager, "both") == ["echo", "slow"]
            assert server_tools(manager, "deny") == ["echo", "add", "coder_list_workspaces"]
            assert server_tools(manager, "allow") == ["coder_list_workspaces"]
            assert server_tools(manager, "nothing") == []

    run(scenario())


def test_names_over_64_characters_are_skipped(
    http_server: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    name = "s" * 40  # bmcp_<40>_echo is 50 characters, bmcp_<40>_coder_list_workspaces is 67

    async def scenario() -> None:
        async with running([{"name": name, "url": http_server.url}]) as manager:
            offered = server_tools(manager, name)
            assert "echo" in offered
            assert "coder_list_workspaces" not in offered
            assert all(len(t.injected_name) <= MAX_TOOL_NAME for t in manager.tools())

    caplog.set_level(logging.WARNING, logger="shared.mcp.manager")
    run(scenario())
    assert any(
        "coder_list_workspaces" in r.getMessage() and "longer than 64" in r.getMessage()
        for r in caplog.records
    )


# -- configuration ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "a", "url": "http://127.0.0.1/mcp", "command": "x"}, "not both"),
        ({"name": "a"}, "set url"),
        (
            {"name": "a", "url": "http://127.0.0.1/mcp", "allow": "("},
            "allow is not a valid regular expression",
        ),
        ({"name": "a", "command": "x", "deny": "[a"}, "deny is not a valid regular expression"),
        ({"name": "a b", "url": "http://127.0.0.1/mcp"}, "name"),
        ({"name": "a.b", "command": "x"}, "name"),
        ({"name": "a", "url": "ftp://127.0.0.1/mcp"}, "http:// or https://"),
        ({"name": "a", "url": "http://127.0.0.1/mcp", "args": ["x"]}, "args and env are for a stdio command"),
        ({"name": "a", "command": "x", "headers": {"A": "b"}}, "headers are for url"),
        ({"name": "a", "command": "x", "cwd": "/"}, "Extra inputs"),
    ],
)
def test_invalid_configs_are_rejected(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        McpServerConfig(**config)


def test_duplicate_server_names_are_rejected() -> None:
    servers = [McpServerConfig(name="a", url="http://127.0.0.1/mcp"), McpServerConfig(name="a", **STDIO)]
    with pytest.raises(ValueError, match="unique"):
        McpToolManager(servers, call_timeout=1)


def test_header_values_are_secret() -> None:
    config = McpServerConfig(
        name="a", url="http://127.0.0.1/mcp", headers={"Authorization": f"Bearer {SECRET}"}
    )
    for shown in (repr(config), str(config), config.model_dump_json(), str(config.model_dump())):
        assert SECRET not in shown
    assert config.header_values() == {"Authorization": f"Bearer {SECRET}"}
    stdio = McpServerConfig(name="b", command="x", env={"TOKEN": SECRET})
    assert SECRET not in repr(stdio)

    class Outer(BaseModel):
        servers: list[McpServerConfig]

    bad = {"name": "a", "url": "http://127.0.0.1/mcp", "command": "x", "headers": {"Authorization": SECRET}}
    with pytest.raises(ValidationError) as raised:
        Outer(servers=[bad])
    assert SECRET not in str(raised.value)


def test_headers_are_sent(caplog: pytest.LogCaptureFixture) -> None:
    server = HttpServer("--token", SECRET).start()

    async def scenario() -> None:
        servers = [
            {"name": "good", "url": server.url, "headers": {"Authorization": f"Bearer {SECRET}"}},
            {"name": "bad", "url": server.url, "headers": {"Authorization": "Bearer wrong"}},
        ]
        async with running(servers, connect_timeout=3) as manager:
            assert server_tools(manager, "good") == TOOLS
            assert server_tools(manager, "bad") == []

    caplog.set_level(logging.DEBUG)
    try:
        run(scenario())
    finally:
        server.kill()
    assert all(SECRET not in record.getMessage() for record in caplog.records)


# -- a published server -----------------------------------------------------------------------------------


def _npm_registry_reachable() -> bool:
    npm = shutil.which("npm")
    if npm is None:
        return False
    try:
        found = subprocess.run(
            [npm, "view", "@modelcontextprotocol/server-everything", "version"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return found.returncode == 0


def _third_party_server() -> tuple[dict[str, Any], str, dict[str, Any], Callable[[Any], None]]:
    """(config, tool, arguments, check of the result) for a published MCP server that can run here."""
    npx = shutil.which("npx")
    if npx and shutil.which("node") and _npm_registry_reachable():

        def echoed(result: Any) -> None:
            assert result["content"][0]["text"] == "Echo: hello"

        config = {
            "name": "everything",
            "command": npx,
            "args": ["-y", "@modelcontextprotocol/server-everything", "stdio"],
        }
        return config, "echo", {"message": "hello"}, echoed

    def has_time(result: Any) -> None:
        assert "UTC" in str(result["content"])

    if importlib.util.find_spec("mcp_server_time") is not None:
        config = {"name": "time", "command": sys.executable, "args": ["-m", "mcp_server_time"]}
        return config, "get_current_time", {"timezone": "UTC"}, has_time
    uvx = shutil.which("uvx")
    if uvx:
        return (
            {"name": "time", "command": uvx, "args": ["mcp-server-time"]},
            "get_current_time",
            {"timezone": "UTC"},
            has_time,
        )
    pytest.skip(
        "no published MCP server can run here: no node/npx with a reachable npm registry, "
        "no mcp_server_time, no uvx"
    )


def test_published_server() -> None:
    config, name, arguments, check = _third_party_server()

    async def scenario() -> None:
        async with running([config], connect_timeout=60) as manager:
            offered = server_tools(manager, config["name"])
            assert name in offered, offered
            check(await manager.call(tool(manager, injected_name(config["name"], name)), arguments))

    run(scenario(), timeout=90)
