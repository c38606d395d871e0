"""The web admin's pages (helper C replaces this placeholder): `page_routes` for the app."""

from __future__ import annotations

from starlette.routing import BaseRoute


def page_routes() -> list[BaseRoute]:
    return []
