"""The family of a request's route, for the shape of the answers on it (``shared.providers.RouteFamilies``)."""

from __future__ import annotations

from starlette.applications import Starlette

from shared.families import Family
from shared.providers import RouteFamilies


def route_family(app: Starlette, path: str) -> Family:
    routes: RouteFamilies = app.state.aibridge_routes
    return routes.of(path)


def takes_user_token(app: Starlette, path: str) -> bool:
    """Whether the route's ``Authorization`` is the user's own provider token (Copilot's), not a gateway key."""
    routes: RouteFamilies = app.state.aibridge_routes
    return routes.takes_user_token(path)
