"""trivpn.config.fields: a section structured by walking its attrs fields, with no code
generated at run time (issue 13: writing and compiling cattrs' structure functions took longer
than the one parse a command does)."""

import builtins
from typing import Any

import pytest

from trivpn.config import ConfigError, parse_config

FULL = """\
[interface]
address = ["10.8.0.1/24", "fd00::1/64"]
[nat]
masquerade = false
[toyvpn]
enabled = true
secret = "a-long-enough-secret"
[state]
node = "gw1"
[metrics]
listen = "127.0.0.1:9586"
"""


def test_a_parse_compiles_no_code(monkeypatch: pytest.MonkeyPatch) -> None:
    parse_config(FULL)  # any module the parse loads lazily is loaded now
    compiled: list[str] = []
    real_compile = builtins.compile

    def compile_noted(source: Any, filename: Any, *args: Any, **kwargs: Any) -> Any:
        compiled.append(str(filename))
        return real_compile(source, filename, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(builtins, "compile", compile_noted)
        cfg = parse_config(FULL)
        with pytest.raises(ConfigError) as bad:
            parse_config(
                '[nat]\nmasquerade = 1\nmystery = 2\n[toyvpn]\nkeepalive = "x"\n'
                '[[wireguard.peers]]\nname = "a"\n'
            )
    assert compiled == []
    assert cfg.toyvpn.secret == b"a-long-enough-secret"
    assert not cfg.nat.masquerade and cfg.state.node == "gw1"
    assert str(cfg.metrics.listen) == "127.0.0.1:9586"
    assert bad.value.problems == [
        "nat.masquerade: 1 — expected true or false",
        "nat.mystery: unknown key — allowed: masquerade, egress",
        "toyvpn.keepalive: 'x' — expected a number",
        "wireguard.peers[0].public_key: (not set) — required",
        "wireguard.peers[0].allowed_ips: (not set) — required",
    ]
