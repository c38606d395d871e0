"""The web admin's pages: server-rendered shells (``templates/``) whose scripts
(``static/*.js``) fill them from the API. A page carries its session's CSRF token in
``<meta name="csrf-token">``; the app's middleware has already sent a request without a
session to ``/login``. The CSP forbids inline code: no ``<script>`` body, ``style=`` or
``on…=`` attribute in a template (tests/control/web/test_pages.py parses every one).

Paths: ``/`` (→ ``/peers``), ``/login``, ``/peers``, ``/add`` (the add form: outside
``/peers/``, so that every peer name has its page), ``/peers/{name}``, ``/server``.

Stable hooks for browser tests (ids, ``data-`` attributes); change them with the tests:

- every page of a session: ``#logout``; ``.error`` elements hold the API's messages, the one
  for a request field is ``.error[data-for=FIELD]`` (``data-for=""``: not a field's);
- login: ``#password``, ``#totp`` (shown when the server asks for a code), ``#login``;
- peers: ``#filter``, ``#sort`` (``name`` | ``activity``), ``#peer-count``, rows
  ``#peers-table tbody tr[data-name=NAME]`` with cells ``td[data-field=F]``, F one of
  ``online`` (``data-online="true"|"false"``), ``name``, ``state``
  (``data-state=active|disabled|expired|over_quota``), ``latest_handshake``, ``rate_down``,
  ``rate_up``, ``usage``, ``expires``, ``addresses``; refreshed every 3 s;
- add: ``#add-name``, ``#add-expires``, ``#add-quota``, ``#add-rate-down``, ``#add-rate-up``,
  ``#add-submit``; then ``#config`` with ``#config-text`` (the wg-quick text),
  ``#config-qr svg``, ``#config-download`` (a ``blob:`` link, ``download=NAME.conf``);
- a peer: ``#peer[data-name]``, ``#peer-state[data-state]``, ``[data-field=…]`` details,
  ``#peer-expires``, ``#peer-quota``, ``#peer-rate-down``, ``#peer-rate-up``, ``#peer-save``
  (sends the inputs that changed), ``#peer-enable`` / ``#peer-disable`` (the one that
  applies is shown), ``#peer-reset``, ``#peer-remove`` (after a ``confirm()``),
  ``#chart svg polyline.down`` / ``.up``; refreshed every 5 s;
- server: ``[data-field=…]`` in ``#server-details`` and ``#server-totals``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from trivpn.control.web.auth import request_auth


def csrf_token(request: Request) -> str | None:
    """The CSRF token of the request's session (None without one, or for an API token)."""
    auth = request_auth(request)
    return None if auth is None else auth.csrf_token


def render(request: Request, template: str, *, nav: str = "", **values: Any) -> Response:
    """``template`` with the session's CSRF token; ``nav`` marks the current page's link."""
    templates = request.app.state.templates
    assert isinstance(templates, Jinja2Templates)
    context = {"csrf_token": csrf_token(request), "nav": nav, **values}
    return templates.TemplateResponse(request, template, context)


async def _home(request: Request) -> Response:
    return RedirectResponse("/peers", status_code=303)


async def _login(request: Request) -> Response:
    if csrf_token(request) is not None:  # logged in already
        return RedirectResponse("/peers", status_code=303)
    return render(request, "login.html")


async def _peers(request: Request) -> Response:
    return render(request, "peers.html", nav="peers")


async def _new_peer(request: Request) -> Response:
    return render(request, "peer_new.html", nav="new")


async def _peer(request: Request) -> Response:
    # the name as the address has it: the script asks the API, which answers 404 for no peer
    return render(request, "peer.html", name=request.path_params["name"])


async def _server(request: Request) -> Response:
    return render(request, "server.html", nav="server")


def page_routes() -> list[BaseRoute]:
    """The pages, for the app's route table."""
    return [
        Route("/", _home, methods=["GET"]),
        Route("/login", _login, methods=["GET"]),
        Route("/peers", _peers, methods=["GET"]),
        Route("/add", _new_peer, methods=["GET"]),
        Route("/peers/{name}", _peer, methods=["GET"]),
        Route("/server", _server, methods=["GET"]),
    ]
