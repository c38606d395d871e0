"""The web admin's pages, in process: each renders for a session (with its CSRF token) and
sends anyone else to the login; no page or template carries inline code the CSP would refuse;
the static files they load exist with the right types; the hooks the browser test relies on
are in the templates."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from starlette.applications import Starlette
from support.fake_admin import FakeAdmin
from support.web_app import Clock, client, fast_hashing, login, make_app, make_credentials

from trivpn.control.web import app as web_app
from trivpn.control.web import pages
from trivpn.control.web.credentials import WebCredentials

PEER = "alice-laptop"  # one of the fake admin's peers
# page path -> the scripts it loads after common.js
PAGES = {
    "/peers": ["peers.js"],
    "/add": ["peer_new.js"],
    f"/peers/{PEER}": ["chart.js", "peer.js"],
    "/server": ["server.js"],
}
TEMPLATES = sorted(web_app.TEMPLATES.glob("*.html"))
STATIC = sorted(p for p in web_app.STATIC.iterdir() if p.is_file())


@pytest.fixture
def creds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WebCredentials:
    fast_hashing(monkeypatch)
    return make_credentials(tmp_path / "state")


@pytest.fixture
def app(creds: WebCredentials) -> Starlette:
    return make_app(FakeAdmin(), creds, Clock())


class Page(HTMLParser):
    """What a test reads of an HTML page: its elements' attributes, inline code, text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.inline_code: list[str] = []  # what the CSP would refuse, described
        self._open_script = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.inline_code.append(f"<{tag} {name}={value!r}>")
            if value is not None and value.strip().lower().startswith("javascript:"):
                self.inline_code.append(f"<{tag} {name}={value!r}>")
        if tag == "style":
            self.inline_code.append("<style>")
        self._open_script = tag == "script"
        if tag == "script" and not attributes.get("src"):
            self.inline_code.append("<script> without src")

    def handle_endtag(self, tag: str) -> None:
        self._open_script = False

    def handle_data(self, data: str) -> None:
        if self._open_script and data.strip():
            self.inline_code.append(f"<script>{data.strip()[:40]}")

    def by_id(self, ident: str) -> dict[str, str | None]:
        found = [attrs for _, attrs in self.elements if attrs.get("id") == ident]
        assert len(found) == 1, f"#{ident}: {len(found)} elements"
        return found[0]

    def scripts(self) -> list[str]:
        return [str(attrs["src"]) for tag, attrs in self.elements if tag == "script"]

    def csrf_meta(self) -> list[str | None]:
        return [
            attrs.get("content")
            for tag, attrs in self.elements
            if tag == "meta" and attrs.get("name") == "csrf-token"
        ]


async def get_page(http: httpx.AsyncClient, path: str) -> Page:
    answer = await http.get(path)
    assert answer.status_code == 200, (path, answer.status_code)
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    return Page(answer.text)


async def test_each_page_renders_for_a_session_with_its_csrf_token(app: Starlette) -> None:
    async with client(app) as http:
        token = await login(http)
        for path, scripts in PAGES.items():
            page = await get_page(http, path)
            assert page.csrf_meta() == [token], path
            assert page.scripts() == ["/static/common.js"] + [f"/static/{s}" for s in scripts]
            assert page.by_id("logout")["type"] == "button"
            assert page.inline_code == [], path
        # another session gets its own token in the same pages
        async with client(app) as other:
            other_token = await login(other)
            assert other_token != token
            assert (await get_page(other, "/peers")).csrf_meta() == [other_token]


async def test_without_a_session_every_page_sends_to_the_login(app: Starlette) -> None:
    async with client(app) as http:
        for path in ["/", *PAGES]:
            answer = await http.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"] == "/login"
        login_page = await get_page(http, "/login")
        assert login_page.csrf_meta() == []  # no session, no token
        assert login_page.scripts() == ["/static/common.js", "/static/login.js"]
        assert login_page.by_id("password")["type"] == "password"
        assert "hidden" in login_page.by_id("totp-row")  # shown when the server asks
        assert login_page.by_id("login")["type"] == "submit"
        assert not [a for _, a in login_page.elements if a.get("id") == "logout"]
        assert login_page.inline_code == []


async def test_a_forged_or_ended_session_gets_no_page(app: Starlette) -> None:
    async with client(app) as http:
        http.cookies.set("trivpn_session", "forged" * 8)
        assert (await http.get("/peers")).headers["location"] == "/login"
    async with client(app) as http:
        await login(http)
        assert (await http.get("/peers")).status_code == 200
        assert (await http.delete("/api/v1/session")).status_code == 204
        assert (await http.get("/peers")).headers["location"] == "/login"


async def test_home_and_login_send_a_session_to_the_peers(app: Starlette) -> None:
    async with client(app) as http:
        await login(http)
        for path in ("/", "/login"):
            answer = await http.get(path)
            assert (answer.status_code, answer.headers["location"]) == (303, "/peers")


async def test_a_peer_page_carries_its_name_escaped(app: Starlette) -> None:
    async with client(app) as http:
        await login(http)
        name = '"><img src=x onerror=alert(1)>'
        answer = await http.get("/peers/" + quote(name))
        assert answer.status_code == 200  # the script asks the API, which answers 404
        assert "<img" not in answer.text
        page = Page(answer.text)
        assert page.by_id("peer")["data-name"] == name
        assert page.inline_code == []
        assert (await get_page(http, f"/peers/{PEER}")).by_id("peer")["data-name"] == PEER


async def test_the_add_form_is_not_a_peer_page(app: Starlette) -> None:
    async with client(app) as http:
        await login(http)
        page = await get_page(http, "/add")
        assert page.by_id("add-submit")["type"] == "submit"
        assert "hidden" in page.by_id("config")  # until a peer is added
        assert not [a for _, a in page.elements if a.get("id") == "peer"]
        # the form lives outside /peers/: a peer named "new" (a valid name) has its page
        assert (await get_page(http, "/peers/new")).by_id("peer")["data-name"] == "new"


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_no_template_has_inline_code(template: Path) -> None:
    source = template.read_text()
    # Jinja tags out, so the HTML parser sees the markup both branches of an {% if %} make
    markup = re.sub(r"{%.*?%}|{#.*?#}", "", source, flags=re.S)
    markup = re.sub(r"{{.*?}}", "x", markup, flags=re.S)
    assert Page(markup).inline_code == []
    assert not re.search(r"\bstyle\s*=|\bon[a-z]+\s*=|javascript:", source, re.I)


def test_every_template_is_rendered_by_a_page() -> None:
    """So the rendered pages the tests above parse cover every template."""
    used = {"base.html", "policy_fields.html"}  # extended by all, included by two
    used |= {"login.html", "peers.html", "peer_new.html", "peer.html", "server.html"}
    assert {t.name for t in TEMPLATES} == used
    sources = {t.name: t.read_text() for t in TEMPLATES}
    assert sum('include "policy_fields.html"' in s for s in sources.values()) == 2
    rendered = re.findall(r'render\(request, "([a-z_]+\.html)"', Path(pages.__file__).read_text())
    assert set(rendered) == used - {"base.html", "policy_fields.html"}


async def test_static_files_are_served_with_their_types(app: Starlette) -> None:
    types = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
    async with client(app) as http:  # public: the login page needs them
        for path in STATIC:
            answer = await http.get(f"/static/{path.name}")
            assert answer.status_code == 200, path.name
            assert answer.headers["content-type"].split(";")[0] == types[path.suffix]
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.content == path.read_bytes()
        assert (await http.get("/static/nothing.js")).status_code == 404
    # the scripts show and hide with the hidden attribute; a button's display must not undo it
    assert "[hidden] { display: none !important; }" in (web_app.STATIC / "app.css").read_text()


async def test_every_script_and_stylesheet_a_page_loads_exists(app: Starlette) -> None:
    async with client(app) as http:
        pages_seen = [await get_page(http, "/login")]
        await login(http)
        pages_seen += [await get_page(http, path) for path in PAGES]
    loaded = set()
    for page in pages_seen:
        loaded |= set(page.scripts())
        loaded |= {str(a["href"]) for t, a in page.elements if t == "link"}
    assert loaded == {f"/static/{p.name}" for p in STATIC}  # and none is left unused


@pytest.mark.parametrize("script", [p for p in STATIC if p.suffix == ".js"], ids=lambda p: p.name)
def test_scripts_put_text_in_the_page_never_markup(script: Path) -> None:
    """Names and messages come from the API: they go in as text (textContent, attributes),
    never parsed as HTML in the page, nor run as code."""
    source = script.read_text()
    assert source.startswith("// ")  # says what it is for
    assert '"use strict";' in source
    forbidden = r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function"
    assert re.findall(forbidden, source) == []
    assert 'setAttribute("style"' not in source and ".style." not in source


def test_the_hooks_the_docstring_promises_are_in_the_templates() -> None:
    """Every ``#id`` the module's docstring lists for browser tests is an element's id."""
    promised = set(re.findall(r"#([a-z][a-z-]*)", pages.__doc__ or ""))
    assert {"password", "totp", "login", "filter", "peers-table", "config-download"} <= promised
    ids = set()
    for template in TEMPLATES:
        ids |= set(re.findall(r'\bid="([a-z-]+)"', template.read_text()))
    for prefix in ("add", "peer"):  # policy_fields.html's ids, made with a prefix
        ids |= {f"{prefix}-{field}" for field in ("expires", "quota", "rate-down", "rate-up")}
    assert promised - ids == set()
