"""Live sessions with the configured MCP servers, their tools, and the tool calls: the gateway's equivalent of
coder/aibridge's ``mcp.ServerProxier``.

Each server has a background task that owns its connection (the transport and session context managers are
entered and exited in that task, as anyio requires), lists its tools, keeps them current, and reconnects with
exponential backoff when the connection fails. Calls come from any task and share the session.

How a change of the tool list is noticed depends on the protocol era the connection negotiated (the SDK's
``Client`` probes ``server/discover`` and falls back to the ``initialize`` handshake):

- 2026-07-28 ("modern"): the server sends ``notifications/tools/list_changed`` only on a
  ``subscriptions/listen`` stream the client opened; one is held open per session. That stream is also
  the liveness signal: when it drops, the tools are re-listed (which fails fast if the server is gone,
  ending the session) and the stream is opened again.
- handshake era (servers on the 2025 protocol, e.g. most published servers): the notification arrives
  on the session as a plain message (``message_handler``), and there is no stream to watch, so the
  session is pinged every ``health_interval`` seconds (10 by default).

In both eras a call that finds the connection closed ends the session at once, so the reconnect does not
wait for the next check.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp.client.client import Client
from mcp.client.session import IncomingMessage
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost, ToolsListChanged
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from shared.mcp.config import McpServerConfig
from shared.mcp.tools import MAX_TOOL_NAME, OPENAI_NAME, McpTool, ToolCallError, injected_name

logger = logging.getLogger(__name__)

INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 30.0
HEALTH_INTERVAL = 10.0
"""Default seconds between liveness checks of a session that has no change stream to watch."""
RELISTEN_DELAY = 1.0
"""Pause before re-opening a change stream that ended within this many seconds of opening."""
CLOSE_TIMEOUT = 8.0
"""Bound on ``close()``: the SDK's stdio shutdown alone may take 2 s of grace, then 2 s after SIGTERM."""
MAX_LIST_PAGES = 100
HTTP_TIMEOUT = 30.0
HTTP_READ_TIMEOUT = 300.0
"""The SDK's defaults (raised to the call timeout): a response stream (a slow call, the change stream) may
stay quiet for minutes."""
CLIENT_NAME = "aibridge"
CLIENT_VERSION = "0.1.0"


def _leaf(exc: BaseException) -> BaseException:
    """The first non-group exception of an exception group (anyio task groups wrap what they raise)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    """One line for a log or a tool error: what failed, without a traceback."""
    exc = _leaf(exc)
    if isinstance(exc, MCPError):
        return exc.message
    if isinstance(exc, _SessionEnded):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _result_text(result: types.CallToolResult) -> str:
    texts = [block.text for block in result.content if isinstance(block, types.TextContent)]
    return "\n".join(texts) if texts else "the tool reported an error without a text"


class _SessionEnded(Exception):
    """The connected session stopped working; the message says why."""


class _Server:
    """One configured server: its connection task and what it currently offers."""

    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self.tools: list[McpTool] = []
        self.client: Client | None = None
        self.attempted = asyncio.Event()  # the first connection attempt is over, either way
        self.changed = asyncio.Event()  # a handshake-era tools/list_changed arrived
        self.broken = asyncio.Event()  # a call found the connection closed
        self.scope = anyio.CancelScope()  # cancelled by close()
        self.task: asyncio.Task[None] | None = None
        self.was_connected = False  # the current attempt got as far as listing the tools

    @property
    def label(self) -> str:
        return f"MCP server {self.config.name!r} ({self.config.server_url})"


class McpToolManager:
    """The tools of the configured MCP servers, kept current, and the calls to them.

    ``start()`` connects to every server (returning once each connected or failed a first attempt),
    ``tools()`` and ``get()`` give what is available right now, ``call()`` runs a tool, ``close()`` stops
    everything. A server that is down is retried in the background; its tools appear once it answers.
    """

    def __init__(
        self,
        servers: list[McpServerConfig],
        *,
        call_timeout: float,
        connect_timeout: float = 10.0,
        health_interval: float = HEALTH_INTERVAL,
    ) -> None:
        names = [server.name for server in servers]
        if duplicated := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"MCP server names must be unique: {', '.join(duplicated)}")
        self._configs = list(servers)
        self._servers: dict[str, _Server] = {}
        self._call_timeout = call_timeout
        self._connect_timeout = connect_timeout
        self._health_interval = health_interval
        self._available: list[McpTool] = []
        self._index: dict[str, McpTool] = {}
        self._started = False

    # -- public API ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to every server concurrently; return once each one connected or failed its first
        attempt (at most ``connect_timeout`` seconds). Failed servers keep being retried in the background."""
        if self._started:
            raise RuntimeError("McpToolManager.start() was already called")
        self._started = True
        for config in self._configs:
            server = _Server(config)
            self._servers[config.name] = server
            server.task = asyncio.create_task(self._run(server), name=f"mcp-server-{config.name}")
        waits = [server.attempted.wait() for server in self._servers.values()]
        if waits:
            with anyio.move_on_after(self._connect_timeout):
                await asyncio.gather(*waits)

    def tools(self) -> list[McpTool]:
        """Every tool available right now: config order, then the server's order."""
        return list(self._available)

    def get(self, injected_name: str) -> McpTool | None:
        return self._index.get(injected_name)

    async def call(self, tool: McpTool, arguments: dict[str, Any]) -> Any:
        """Run ``tool`` with ``arguments``; return the ``CallToolResult`` in its wire shape (``content``,
        ``structuredContent``, ``isError``), JSON-compatible.

        Raises ``ToolCallError`` when there is no result to give: the server is not connected, the
        connection failed, the call timed out (``call_timeout``), or the tool reported an error
        (``isError``; the message is the result's text). Cancelling the caller cancels the MCP request.
        """
        server = self._servers.get(tool.server)
        client = server.client if server is not None else None
        if server is None or client is None:
            raise ToolCallError(f"MCP server {tool.server!r} is not connected")
        what = f"MCP tool {tool.name!r} on server {tool.server!r}"
        try:
            with anyio.fail_after(self._call_timeout):
                # read_timeout_seconds: else the session's default (connect_timeout) would apply
                result = await client.call_tool(tool.name, arguments, read_timeout_seconds=self._call_timeout)
        except TimeoutError:
            raise ToolCallError(f"{what} timed out after {self._call_timeout:g} s") from None
        except MCPError as exc:
            if exc.code == types.REQUEST_TIMEOUT:
                raise ToolCallError(f"{what} timed out after {self._call_timeout:g} s") from None
            if exc.code == types.CONNECTION_CLOSED:
                self._broken(server, client)
                raise ToolCallError(f"MCP server {tool.server!r}: connection lost ({exc.message})") from None
            raise ToolCallError(f"{what} failed: {exc.message}") from None
        except Exception as exc:  # transport failures, results the SDK rejects, a session closed under us
            if isinstance(_leaf(exc), httpx2.TransportError | OSError | anyio.BrokenResourceError):
                self._broken(server, client)
            raise ToolCallError(f"{what} failed: {_describe(exc)}") from None
        if result.is_error:
            raise ToolCallError(_result_text(result))
        return result.model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude={"meta", "result_type"}
        )

    @staticmethod
    def _broken(server: _Server, client: Client) -> None:
        """A call found the connection closed: end that session now (not a later one's)."""
        if server.client is client:
            server.broken.set()

    async def close(self) -> None:
        """Stop every session and background task (stdio servers are terminated), within a few seconds."""
        tasks = []
        for server in self._servers.values():
            server.scope.cancel()
            if server.task is not None:
                tasks.append(server.task)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
        for task in pending:  # a transport that ignored the cancellation: cancel the task itself
            logger.warning(
                "MCP session task %s did not stop in %g s; cancelling it", task.get_name(), CLOSE_TIMEOUT
            )
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        self._set_tools(None)

    # -- the per-server task ---------------------------------------------------------------------------

    async def _run(self, server: _Server) -> None:
        """Connect, serve, reconnect with backoff; until ``close()``."""
        delay = INITIAL_BACKOFF
        failures = 0
        with server.scope:
            while True:
                server.was_connected = False
                try:
                    reason = await self._session(server)
                except Exception as exc:
                    reason = _describe(exc)
                finally:
                    self._disconnected(server)
                if server.was_connected:
                    failures = 1  # this outage is logged: further failed attempts only at debug level
                    delay = INITIAL_BACKOFF
                    logger.warning("%s: session ended (%s); reconnecting", server.label, reason)
                else:
                    failures += 1
                    if failures == 1:
                        logger.warning(
                            "%s unavailable: %s; retrying in the background (backoff up to %g s)",
                            server.label,
                            reason,
                            MAX_BACKOFF,
                        )
                    else:
                        logger.debug("%s: attempt %d failed: %s", server.label, failures, reason)
                await anyio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)

    async def _session(self, server: _Server) -> str:
        """One connection: connect and list tools (within ``connect_timeout``), then watch it until it
        ends. Returns or raises ``_SessionEnded`` once it was connected; raises if it never connected."""
        server.broken.clear()
        server.changed.clear()
        with anyio.CancelScope(deadline=anyio.current_time() + self._connect_timeout) as connecting:
            async with self._connect(server) as client:
                tools = await self._list_tools(server, client)
                connecting.deadline = math.inf
                server.was_connected = True
                server.client = client
                self._set_tools(server, tools)
                server.attempted.set()
                logger.info(
                    "%s connected (protocol %s): %d tools offered",
                    server.label,
                    client.protocol_version,
                    len(server.tools),
                )
                try:
                    return await self._watch(server, client)
                finally:
                    server.client = None
        raise TimeoutError(f"no answer within {self._connect_timeout:g} s")

    @asynccontextmanager
    async def _connect(self, server: _Server) -> AsyncIterator[Client]:
        config = server.config

        async def on_message(message: IncomingMessage) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                server.changed.set()
            elif isinstance(message, Exception):
                logger.debug("%s: transport reported %s", server.label, _describe(message))

        async with AsyncExitStack() as stack:
            target: Any
            if config.url is not None:
                timeout = httpx2.Timeout(HTTP_TIMEOUT, read=max(HTTP_READ_TIMEOUT, self._call_timeout + 5))
                http = await stack.enter_async_context(
                    httpx2.AsyncClient(headers=config.header_values(), timeout=timeout)
                )
                target = streamable_http_client(config.url, http_client=http)
            else:
                target = StdioServerParameters(
                    command=config.command or "", args=config.args, env=config.env or None
                )
            client = Client(
                target,
                cache=None,  # the tool list is re-fetched on purpose; never served from a cache
                read_timeout_seconds=self._connect_timeout,  # list, ping, listen ack; calls have their own
                message_handler=on_message,
                client_info=types.Implementation(name=CLIENT_NAME, version=CLIENT_VERSION),
            )
            yield await stack.enter_async_context(client)

    async def _watch(self, server: _Server, client: Client) -> str:
        """Keep the tools current until the session ends; return why it ended."""
        async with anyio.create_task_group() as tg:
            outcome = ""

            async def until_broken() -> None:
                nonlocal outcome
                await server.broken.wait()
                outcome = "a call found the connection closed"
                tg.cancel_scope.cancel()

            async def watch() -> None:
                nonlocal outcome
                if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                    await self._listen(server, client)  # returns only when the server serves no stream
                outcome = await self._poll(server, client)
                tg.cancel_scope.cancel()

            tg.start_soon(until_broken)
            tg.start_soon(watch)
        return outcome

    async def _listen(self, server: _Server, client: Client) -> None:
        """Hold a ``subscriptions/listen`` stream open, re-listing the tools on each change and re-opening
        the stream when it ends (after a re-list, which fails if the server is gone). Returns when the
        server does not serve the stream; raises ``_SessionEnded`` or the re-list's error otherwise."""
        while True:
            opened = anyio.current_time()
            try:
                async with client.listen(tools_list_changed=True) as subscription:
                    if not subscription.honored.tools_list_changed:
                        return
                    async for event in subscription:
                        if isinstance(event, ToolsListChanged):
                            await self._relist(server, client)
                    logger.debug("%s: change stream closed by the server", server.label)
            except ListenNotSupportedError:
                return
            except SubscriptionLost as lost:
                logger.debug("%s: change stream lost: %s", server.label, _describe(lost.__cause__ or lost))
            except MCPError as exc:
                if exc.code == types.CONNECTION_CLOSED:
                    raise _SessionEnded("connection closed") from None
                logger.debug("%s: no change stream (%s); polling instead", server.label, exc.message)
                return
            try:
                await self._relist(server, client)
            except Exception as exc:
                raise _SessionEnded(_describe(exc)) from None
            if anyio.current_time() - opened < RELISTEN_DELAY:
                await anyio.sleep(RELISTEN_DELAY)

    async def _poll(self, server: _Server, client: Client) -> str:
        """No change stream: re-list on a handshake-era list_changed notification, and check the session
        every ``health_interval`` seconds (ping, or a re-list where ping is not served)."""
        ping = client.protocol_version not in MODERN_PROTOCOL_VERSIONS
        while True:
            with anyio.move_on_after(self._health_interval):
                await server.changed.wait()
            try:
                if server.changed.is_set():
                    server.changed.clear()
                    await self._relist(server, client)
                elif ping:
                    try:
                        await client.session.send_ping()
                    except MCPError as exc:
                        if exc.code != types.METHOD_NOT_FOUND:
                            raise
                        ping = False
                else:
                    await self._relist(server, client)
            except Exception as exc:
                return _describe(exc)

    async def _relist(self, server: _Server, client: Client) -> None:
        """List the tools of a connected server again and publish them, logging a change."""
        tools = await self._list_tools(server, client)
        if [tool.name for tool in tools] != [tool.name for tool in server.tools]:
            logger.info("%s: tools changed, now %s", server.label, [tool.name for tool in tools])
        self._set_tools(server, tools)

    async def _list_tools(self, server: _Server, client: Client) -> list[McpTool]:
        """Every page of the server's tools, filtered into what is offered."""
        listed: list[types.Tool] = []
        cursor: str | None = None
        with anyio.fail_after(self._connect_timeout):
            for _ in range(MAX_LIST_PAGES):
                page = await client.list_tools(cursor=cursor)
                listed.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    break
            else:
                logger.warning(
                    "%s: tool list still paginating after %d pages; cut", server.label, MAX_LIST_PAGES
                )
        return self._offered(server, listed)

    def _offered(self, server: _Server, listed: list[types.Tool]) -> list[McpTool]:
        config = server.config
        offered: list[McpTool] = []
        for tool in listed:
            if not config.offers(tool.name):
                continue
            name = injected_name(config.name, tool.name)
            if len(name) > MAX_TOOL_NAME:
                logger.warning(
                    "%s: tool %r skipped: its injected name %r is longer than %d characters",
                    server.label,
                    tool.name,
                    name,
                    MAX_TOOL_NAME,
                )
                continue
            if not OPENAI_NAME.match(name):
                logger.warning(
                    "%s: tool %r skipped: %r is not a valid function name ([a-zA-Z0-9_-])",
                    server.label,
                    tool.name,
                    name,
                )
                continue
            offered.append(
                McpTool(
                    server=config.name,
                    server_url=config.server_url,
                    name=tool.name,
                    injected_name=name,
                    description=tool.description,
                    input_schema=dict(tool.input_schema),
                )
            )
        return offered

    # -- the published tool list -----------------------------------------------------------------------

    def _disconnected(self, server: _Server) -> None:
        server.client = None
        server.attempted.set()
        if server.tools:
            self._set_tools(server, [])

    def _set_tools(self, server: _Server | None, tools: list[McpTool] | None = None) -> None:
        """Replace one server's tools (or, with None, drop them all) and rebuild the published list."""
        if server is None:
            for each in self._servers.values():
                each.tools = []
        else:
            server.tools = list(tools or [])
        available: list[McpTool] = []
        index: dict[str, McpTool] = {}
        for each in self._servers.values():  # config order
            for tool in each.tools:
                if tool.injected_name in index:
                    logger.warning(
                        "MCP tool name %r of server %r clashes with server %r's; skipped",
                        tool.injected_name,
                        tool.server,
                        index[tool.injected_name].server,
                    )
                    continue
                index[tool.injected_name] = tool
                available.append(tool)
        self._available = available
        self._index = index


__all__ = ["McpToolManager"]
