"""The last line of defence: an exception no handler took becomes a 500 in the route's family's shape, never uvicorn's
plain-text one, and one log line that names where it happened (never the request's body or headers)."""

from __future__ import annotations

import logging
import traceback

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import GatewayError
from api.route_family import route_family

logger = logging.getLogger(__name__)

INTERNAL_ERROR = GatewayError(
    500, "the gateway failed while handling the request", "server_error", "internal_error"
)


class UnexpectedErrors:
    """ASGI middleware: answers 500 ``internal_error`` for an exception raised before the response started;
    after it started, the connection is closed (a cut response, never one that looks complete)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            logger.error(
                "unexpected %s in %s %s at %s:%s%s",
                type(exc).__name__,
                scope["method"],
                scope["path"][:200],
                where.filename,
                where.lineno,
                "" if started else "; answered 500",
            )
            if started:
                return
            await INTERNAL_ERROR.response(route_family(scope["app"], scope["path"]))(scope, receive, send)
