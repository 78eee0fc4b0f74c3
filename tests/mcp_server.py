"""A small MCP server for the tests, built with the SDK's MCPServer.

    python -m tests.mcp_server --http --port P    # streamable HTTP on http://127.0.0.1:P/mcp
    python -m tests.mcp_server --stdio            # stdio
    python -m tests.mcp_server --http --port P --legacy   # as a 2025 server: no server/discover
    python -m tests.mcp_server --http --port P --token T  # 401 unless "Authorization: Bearer T"

With ``--legacy`` the server answers ``server/discover`` with "method not found", as servers on the 2025
protocol do, so an mcp 2.x client falls back to the ``initialize`` handshake (HTTP only: over stdio the
first request already fixes the connection's era, and the client's re-probe would fail).

`add_tool` registers `late_tool` at runtime and announces it. With mcp 2.x a tools list change reaches
a client by one of two routes, depending on the protocol era the client negotiated:

- 2026-07-28 ("modern") clients only get it on a `subscriptions/listen` stream they opened; a tool
  publishes it on the server's subscription bus with `ctx.notify_tools_changed()`.
- handshake-era clients (initialize, <= 2025-11-25) get a bare `notifications/tools/list_changed`, sent
  with `ctx.request_context.session.send_tool_list_changed()` (on a modern connection the SDK drops that
  one, so sending both is harmless).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError

WORKSPACES: dict[str, Any] = {
    "workspaces": [
        {"id": "ws-1", "name": "dev", "owner": "me", "status": "running"},
        {"id": "ws-2", "name": "ci", "owner": "me", "status": "stopped"},
    ],
    "count": 2,
}


def build_server(*, legacy: bool = False) -> MCPServer:
    server = MCPServer("aibridge-test", log_level="WARNING")
    if legacy:

        async def no_discover(ctx: Any, params: types.RequestParams) -> types.DiscoverResult:
            raise MCPError(types.METHOD_NOT_FOUND, "Method not found")

        server._lowlevel_server.add_request_handler("server/discover", types.RequestParams, no_discover)

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    async def slow(seconds: float) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    @server.tool()
    def fail(message: str) -> str:
        """Always fails with the message."""
        raise ToolError(message)

    @server.tool()
    def coder_list_workspaces(owner: str = "me") -> dict[str, Any]:
        """List the owner's workspaces (fixed answer)."""
        return {**WORKSPACES, "owner": owner}

    @server.tool()
    async def add_tool(ctx: Context) -> str:
        """Register `late_tool` and tell the client the tool list changed."""

        def late_tool() -> str:
            """A tool registered at runtime."""
            return "late"

        if server._tool_manager.get_tool("late_tool") is None:  # no public lookup
            server.add_tool(late_tool, name="late_tool")
        await ctx.notify_tools_changed()
        await ctx.request_context.session.send_tool_list_changed()
        return "added late_tool"

    return server


def require_token(app: Any, token: str) -> Any:
    """The ASGI app, answering 401 to HTTP requests without ``Authorization: Bearer <token>``."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            await send(
                {"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]}
            )
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await app(scope, receive, send)

    return guarded


def main() -> None:
    parser = argparse.ArgumentParser()
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--http", action="store_true")
    mode.add_argument("--stdio", action="store_true")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--legacy", action="store_true")
    parser.add_argument("--token")
    args = parser.parse_args()
    server = build_server(legacy=args.legacy)
    if args.stdio:
        server.run("stdio")
        return
    app = server.streamable_http_app()
    uvicorn.run(
        app if args.token is None else require_token(app, args.token),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
