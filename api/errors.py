"""The gateway's own error answers: one error type, rendered in the shape of the route's API family."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

from api.route_family import route_family
from shared.families import Family, error_body

logger = logging.getLogger(__name__)


class GatewayError(Exception):
    """An answer the gateway gives for itself: ``status`` with an error body saying ``message``; ``type_``,
    ``code`` and ``param`` as OpenAI's errors have them (Anthropic's shape takes its type from the status)."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        code: str,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type_ = type_
        self.code = code
        self.headers = headers
        self.param = param

    def body(self, family: Family) -> bytes:
        return error_body(family, self.status, self.message, self.type_, self.code, self.param)

    def response(self, family: Family) -> Response:
        return Response(self.body(family), self.status, self.headers, media_type="application/json")


class InvalidRequest(GatewayError):
    """A request the gateway refuses before enqueuing anything (HTTP 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(400, message, "invalid_request_error", "invalid_request", param=param)


class Unavailable(GatewayError):
    """Something the gateway depends on did not answer (HTTP 503); ``subject``: "the gateway's queue is"."""

    def __init__(self, subject: str, code: str) -> None:
        super().__init__(503, f"{subject} unavailable", "server_error", code, {"Retry-After": "5"})


def as_gateway_error(exc: Exception) -> GatewayError:
    """What the gateway answers for ``exc``: a GatewayError as it is; an outage of Redis, a framework error
    (no such route, a method it does not take, a path parameter it cannot read) mapped to one."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, RedisError):
        return Unavailable("the gateway's queue is", "queue_unavailable")
    if isinstance(exc, HTTPException):
        code = "not_found" if exc.status_code == 404 else "http_error"
        return GatewayError(exc.status_code, str(exc.detail), "invalid_request_error", code, exc.headers)
    if isinstance(exc, RequestValidationError):
        return InvalidRequest(str(exc))
    raise TypeError(f"no gateway error for {type(exc).__name__}")


async def answer_error(request: Request, exc: Exception) -> Response:
    """The one exception handler: the error in the shape of the request's route's family."""
    error = as_gateway_error(exc)
    if isinstance(error, Unavailable):
        logger.warning("%s: %s", error.code, type(exc.__cause__ or exc).__name__)
    return error.response(route_family(request.app, request.url.path))


def install(app: FastAPI) -> None:
    for handled in (GatewayError, RedisError, HTTPException, RequestValidationError):
        app.add_exception_handler(handled, answer_error)
