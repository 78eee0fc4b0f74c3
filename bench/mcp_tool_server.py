"""The MCP server of ``bench.run``'s aibridge-mcp run: one fast tool over streamable HTTP.

    python -m bench.mcp_tool_server --port P    # http://127.0.0.1:P/mcp

Its tool ``echo`` returns its ``text`` at once; configured as server ``bench``, the gateway offers it to the
model as ``bmcp_bench_echo`` (the fake upstream calls any tool named ``bmcp_*`` it is offered).
"""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server.mcpserver import MCPServer

SERVER_NAME = "bench"
PATH = "/mcp"


def build_server() -> MCPServer:
    server = MCPServer("aibridge-bench", log_level="WARNING")

    @server.tool()
    def echo(text: str = "") -> str:
        """Return the text unchanged."""
        return text

    return server


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mcp_tool_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = build_server().streamable_http_app()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", loop="uvloop", http="httptools")


if __name__ == "__main__":
    main()
