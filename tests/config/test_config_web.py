"""[web]: the web admin's listen address and its optional TLS files (both or neither)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trivpn.config import ConfigError, Endpoint, WebConfig, parse_config


def problems(text: str, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, base_dir=base_dir)
    return raised.value.problems


def test_web_is_off_by_default() -> None:
    assert parse_config("").web == WebConfig(listen=None, tls_cert=None, tls_key=None)
    assert parse_config('[web]\nlisten = ""\ntls_cert = ""\ntls_key = ""\n').web == WebConfig()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:51821", Endpoint("127.0.0.1", 51821)),
        ("[::1]:51821", Endpoint("::1", 51821)),
        ("0.0.0.0:443", Endpoint("0.0.0.0", 443)),
    ],
)
def test_web_listen(text: str, expected: Endpoint) -> None:
    assert parse_config(f'[web]\nlisten = "{text}"\n').web.listen == expected


@pytest.mark.parametrize(
    ("value", "line"),
    [
        (
            "51821",
            "web.listen: 51821 — expected host:port, e.g. 127.0.0.1:51821 or [::1]:51821; "
            '"" turns the web admin off',
        ),
        (
            '"localhost:51821"',
            "web.listen: 'localhost:51821' — the host must be an IP address, e.g. "
            '127.0.0.1:51821 or [::1]:51821; "" turns the web admin off',
        ),
        (
            '"127.0.0.1:70000"',
            "web.listen: '127.0.0.1:70000' — the port must be 1 to 65535, e.g. "
            '127.0.0.1:51821 or [::1]:51821; "" turns the web admin off',
        ),
    ],
)
def test_web_listen_rejected(value: str, line: str) -> None:
    assert problems(f"[web]\nlisten = {value}\n") == [line]


def test_tls_files_are_read_against_the_config_dir(tmp_path: Path) -> None:
    web = parse_config(
        '[web]\nlisten = "0.0.0.0:443"\ntls_cert = "web.crt"\ntls_key = "/etc/ssl/web.key"\n',
        base_dir=tmp_path,
    ).web
    assert web.tls_cert == tmp_path / "web.crt"
    assert web.tls_key == Path("/etc/ssl/web.key")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            'tls_cert = "web.crt"',
            "web.tls_key: (not set) — required with tls_cert: HTTPS needs both files, or set "
            "neither for HTTP",
        ),
        (
            'tls_key = "web.key"',
            "web.tls_cert: (not set) — required with tls_key: HTTPS needs both files, or set "
            "neither for HTTP",
        ),
        (
            'tls_cert = "web.crt"\ntls_key = ""',
            "web.tls_key: (not set) — required with tls_cert: HTTPS needs both files, or set "
            "neither for HTTP",
        ),
        ("tls_cert = 443", 'web.tls_cert: 443 — expected the path of a PEM file or ""'),
        (
            'tls_key = "a\\u0000b"',
            "web.tls_key: 'a\\x00b' — expected the path of a PEM file or \"\"",
        ),
    ],
)
def test_tls_files_both_or_neither(text: str, line: str) -> None:
    assert problems(f"[web]\n{text}\n") == [line]


def test_web_unknown_key() -> None:
    assert problems("[web]\ntls = true\n") == [
        "web.tls: unknown key — allowed: listen, tls_cert, tls_key"
    ]
