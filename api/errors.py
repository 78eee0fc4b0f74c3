"""Errors the API answers for itself, before anything is enqueued."""

from __future__ import annotations


class InvalidRequest(Exception):
    """A request the gateway refuses before enqueuing anything (HTTP 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
