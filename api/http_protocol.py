"""uvicorn's httptools protocol with the gateway's error shape where uvicorn answers in plain text, and the
read timeouts it lacks (a slowloris client holds no connection for long):

- a request's headers must be complete within ``header_timeout`` seconds from the connection's start (an
  idle new connection is closed then), or for a later request on the connection, from its first byte;
  408 ``request_timeout`` if part of a request came, then the connection is closed;
- a body still arriving after its response ended (the route did not read it) gets ``body_timeout`` more
  seconds, then the connection is closed. A body the route reads is bounded by ``api.limits.read_body``.

Idle kept-alive connections keep uvicorn's keep-alive timeout.
"""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from shared.config import Settings
from shared.errors import error_body

MALFORMED = error_body("the request is not valid HTTP/1.1", "invalid_request_error", "malformed_http")
HEADERS_TIMED_OUT = error_body(
    "the request headers did not arrive in time", "invalid_request_error", "request_timeout"
)


class GatewayHttpProtocol(HttpToolsProtocol):
    header_timeout: ClassVar[float]
    body_timeout: ClassVar[float]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._read_timer: TimerHandle | None = None
        self._request_open = False  # a request's first byte was read, its last one not yet
        self._headers_pending = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_read_timer(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._request_open and self._read_timer is None:
            self._start_read_timer(self.header_timeout)  # bytes between requests start the next one's clock
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_open = self._headers_pending = True
        if self._read_timer is None:
            self._start_read_timer(self.header_timeout)

    def on_headers_complete(self) -> None:
        self._headers_pending = False
        self._stop_read_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._request_open = False
        self._stop_read_timer()
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete and self.timeout_keep_alive_task is None:
            # the body ended after its response, whose keep-alive timer the body's bytes cancelled
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._request_open and not self.transport.is_closing():
            self._start_read_timer(self.body_timeout)

    def send_400_response(self, msg: str) -> None:
        if self._response_under_way():
            self.transport.close()  # an answer now would be read as the end of that response
            return
        self._answer_and_close(400, MALFORMED)

    def _response_under_way(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _start_read_timer(self, seconds: float) -> None:
        self._stop_read_timer()
        self._read_timer = self.loop.call_later(seconds, self._read_timed_out)

    def _stop_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self._response_under_way():  # the next request is early (pipelined): its clock waits for this one
            self._start_read_timer(self.header_timeout)
        elif self._headers_pending:
            self._answer_and_close(408, HEADERS_TIMED_OUT)
        else:
            self.transport.close()

    def _answer_and_close(self, status: int, body: bytes) -> None:
        head = [STATUS_LINE[status]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def http_protocol(settings: Settings) -> type[GatewayHttpProtocol]:
    """The protocol class to give uvicorn (``http=``), with the read timeouts of ``settings``."""

    class ConfiguredHttpProtocol(GatewayHttpProtocol):
        header_timeout = settings.header_timeout
        body_timeout = settings.body_timeout

    return ConfiguredHttpProtocol
