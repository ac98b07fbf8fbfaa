"""The web console (GET / and its pages): server-rendered HTML, no external resources."""

from __future__ import annotations


def add_routes(routes, app) -> None:
    pass
