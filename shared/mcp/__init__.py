"""MCP tool injection: server configuration, the tools offered to the model, and the live sessions.

- ``shared.mcp.config``: ``McpServerConfig``, one configured MCP server (streamable HTTP or stdio) and its
  tool filters.
- ``shared.mcp.tools``: ``McpTool`` (one injected tool, ``bmcp_<server>_<tool>``) and ``ToolCallError``.
- ``shared.mcp.manager``: ``McpToolManager``, a live session per server, its tools, and the calls
  (coder/aibridge's ``mcp.ServerProxier``).

Only the first two are re-exported here: they are light, while the manager imports the MCP SDK, which
processes that only read the settings (the API) should not pay for. Import it from ``shared.mcp.manager``.
"""

from shared.mcp.config import McpServerConfig
from shared.mcp.tools import INJECTED_PREFIX, MAX_TOOL_NAME, McpTool, ToolCallError, injected_name

__all__ = [
    "INJECTED_PREFIX",
    "MAX_TOOL_NAME",
    "McpServerConfig",
    "McpTool",
    "ToolCallError",
    "injected_name",
]
