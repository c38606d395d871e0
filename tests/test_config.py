"""trivpn.config: TOML -> attrs classes, and one clear line per problem."""

import ipaddress
import json
import socket
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trivpn.config import (
    Config,
    ConfigError,
    Endpoint,
    default_config,
    find_overlaps,
    load_config,
    parse_config,
)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "conf" / "trivpn.toml"
ENABLED = '[toyvpn]\nenabled = true\nsecret = "0123456789"\n'


def problems(text: str, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, **kwargs)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def only_problem(text: str, **kwargs: Any) -> str:
    found = problems(text, **kwargs)
    assert len(found) == 1, found
    return found[0]


# --- the shipped file and the defaults ------------------------------------------------------


def test_shipped_config_is_the_defaults() -> None:
    cfg = load_config(SHIPPED)
    assert cfg.source == str(SHIPPED)
    # the shipped file spells out a placeholder secret; the default has none
    assert cfg.toyvpn.secret == b"change-me"
    unplaceholdered = attrs.evolve(cfg.toyvpn, secret=b"")
    assert attrs.evolve(cfg, toyvpn=unplaceholdered, source="<string>") == default_config()


def test_empty_file_is_the_defaults() -> None:
    cfg = parse_config("")
    assert cfg == default_config()
    assert cfg.source == "<string>"
    assert cfg.interface.address == (ipaddress.IPv4Interface("10.8.0.1/24"),)
    assert cfg.interface.subnets == (ipaddress.IPv4Network("10.8.0.0/24"),)
    assert cfg.toyvpn.listen == Endpoint("0.0.0.0", 8000)
    assert cfg.toyvpn.enabled is False
    assert cfg.toyvpn.keepalive == 15.0


def test_full_valid_config() -> None:
    cfg = parse_config(
        """
        [interface]
        name = "vpn1"
        address = ["10.8.0.1/24", "fd00:8::1/64", "10.8.0.2/24"]
        mtu = 1400
        [nat]
        masquerade = false
        egress = "eth0"
        [toyvpn]
        enabled = true
        listen = "[::]:9000"
        secret = "0123456789"
        pool = "10.8.0.64/26"
        dns = ["9.9.9.9", "2620:fe::fe"]
        routes = ["0.0.0.0/0", "::/0"]
        search_domain = "example.com"
        keepalive = 2.5
        idle_timeout = 30
        """,
        source="x.toml",
    )
    assert cfg.source == "x.toml"
    assert cfg.interface.subnets == (
        ipaddress.ip_network("10.8.0.0/24"),
        ipaddress.ip_network("fd00:8::/64"),
    )
    assert cfg.nat == attrs.evolve(cfg.nat, masquerade=False, egress="eth0")
    toy = cfg.toyvpn
    assert toy.listen == Endpoint("::", 9000)
    assert toy.secret == b"0123456789"
    assert toy.pool == ipaddress.IPv4Network("10.8.0.64/26")
    assert toy.dns == (ipaddress.ip_address("9.9.9.9"), ipaddress.ip_address("2620:fe::fe"))
    assert toy.routes == (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    assert (toy.search_domain, toy.keepalive, toy.idle_timeout) == ("example.com", 2.5, 30.0)
    assert isinstance(toy.idle_timeout, float)


def test_secret_never_in_repr() -> None:
    cfg = parse_config(ENABLED.replace("0123456789", "s3cr3t-value"))
    assert cfg.toyvpn.secret == b"s3cr3t-value"
    assert "s3cr3t" not in repr(cfg)
    assert "s3cr3t" not in repr(cfg.toyvpn)


# --- Endpoint -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "family", "shown"),
    [
        ("0.0.0.0:8000", "0.0.0.0", 8000, socket.AF_INET, "0.0.0.0:8000"),
        ("[::]:8000", "::", 8000, socket.AF_INET6, "[::]:8000"),
        ("[0:0::0:0]:1", "::", 1, socket.AF_INET6, "[::]:1"),
        ("[FD00::1]:65535", "fd00::1", 65535, socket.AF_INET6, "[fd00::1]:65535"),
    ],
)
def test_endpoint_parse(text: str, host: str, port: int, family: int, shown: str) -> None:
    endpoint = Endpoint.parse(text)
    assert endpoint == Endpoint(host, port)
    assert endpoint.family == family
    assert str(endpoint) == shown


# --- files ----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "No such file or directory" in str(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    # a directory: unreadable even for root, unlike a chmod 000 file
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "Is a directory" in str(info.value)


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[interface]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "not UTF-8" in str(info.value)


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "conf.toml"
    path.write_text('[interface]\nname = "x"\nmtu = = 3\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: TOML syntax error at line 3, column 7: Invalid value"]


def test_toml_syntax_error_at_end_of_document() -> None:
    line = only_problem('[toyvpn]\nsecret = "open')
    assert line.startswith("<string>: TOML syntax error at end of document: ")
    assert "open" not in line  # tomllib doesn't echo the text; keep it that way for secrets


def test_toml_nested_too_deeply() -> None:
    assert only_problem("a = " + "[" * 5000 + "]" * 5000) == "<string>: TOML nested too deeply"


# --- unknown keys and wrong types -----------------------------------------------------------


def test_unknown_key_in_section() -> None:
    line = only_problem("[toyvpn]\nsecrte = 'x'\n")
    assert line == (
        "toyvpn.secrte: unknown key — allowed: enabled, listen, secret, secret_file, pool, "
        "dns, routes, search_domain, keepalive, idle_timeout"
    )


def test_unknown_section_and_odd_key() -> None:
    found = problems('[wirequard]\n[interface]\n"my key" = 1\n')
    assert found == [
        'interface."my key": unknown key — allowed: name, address, mtu',
        "wirequard: unknown key — allowed: interface, nat, toyvpn",
    ]


def test_source_is_not_a_key() -> None:
    assert only_problem('source = "x"').startswith("source: unknown key — ")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[interface]\nmtu = 'big'", "interface.mtu: 'big' — expected an integer"),
        ("[interface]\nmtu = true", "interface.mtu: true — expected an integer"),
        ("[interface]\nmtu = 1420.0", "interface.mtu: 1420 — expected an integer"),
        ("[interface]\nname = 5", "interface.name: 5 — expected a string"),
        ("[nat]\nmasquerade = 1", "nat.masquerade: 1 — expected true or false"),
        ("[toyvpn]\nkeepalive = '15'", "toyvpn.keepalive: '15' — expected a number"),
        ("[toyvpn]\nkeepalive = nan", "toyvpn.keepalive: nan — expected a finite number"),
        ("[toyvpn]\ndns = '1.1.1.1'", "toyvpn.dns: '1.1.1.1' — expected a list, e.g. [...]"),
        ("interface = 3", "interface: 3 — expected a table: a [section] or { key = value, ... }"),
        (
            "[toyvpn]\nlisten = 8000",
            "toyvpn.listen: 8000 — expected host:port, e.g. 0.0.0.0:8000 or [::]:8000",
        ),
    ],
)
def test_wrong_type(text: str, line: str) -> None:
    assert only_problem(text) == line


# --- addresses and networks -----------------------------------------------------------------


@pytest.mark.parametrize("bad", ["10.8.0.1/33", "10.8.0.1", "10.8.0/24", "fd00::1/129", "x"])
def test_bad_interface_address(bad: str) -> None:
    line = only_problem(f'[interface]\naddress = ["10.9.0.1/24", "{bad}"]')
    assert line == (
        f"interface.address[1]: '{bad}' — expected an IP address with prefix, e.g. 10.8.0.1/24"
    )


def test_interface_address_that_is_the_subnet() -> None:
    line = only_problem('[interface]\naddress = ["10.8.0.0/24"]')
    assert line.startswith("interface.address[0]: '10.8.0.0/24' — ")
    assert "did you mean 10.8.0.1/24?" in line


def test_empty_interface_address() -> None:
    line = only_problem("[interface]\naddress = []")
    assert line.startswith("interface.address: [] — expected at least one address")


def test_duplicate_interface_address() -> None:
    line = only_problem('[interface]\naddress = ["10.8.0.1/24", "fd00::1/64", "10.8.0.1/16"]')
    assert line.startswith("interface.address: ['10.8.0.1/24', 'fd00::1/64', '10.8.0.1/16'] — ")
    assert "duplicate address 10.8.0.1" in line


def test_pool_with_host_bits() -> None:
    line = only_problem('[toyvpn]\npool = "10.8.0.129/25"')
    assert line == "toyvpn.pool: '10.8.0.129/25' — has host bits set; did you mean 10.8.0.128/25?"


def test_pool_must_be_ipv4() -> None:
    line = only_problem('[toyvpn]\npool = "fd00::/64"')
    assert line.startswith("toyvpn.pool: 'fd00::/64' — expected an IPv4 network")


def test_routes_with_host_bits_and_bad_dns() -> None:
    found = problems('[toyvpn]\nroutes = ["0.0.0.0/0", "::1/64"]\ndns = ["1.1.1.1", "dns.google"]')
    assert found == [
        "toyvpn.dns[1]: 'dns.google' — expected an IP address, e.g. 1.1.1.1",
        "toyvpn.routes[1]: '::1/64' — has host bits set; did you mean ::/64?",
    ]


@pytest.mark.parametrize(
    ("listen", "reason"),
    [
        ("0.0.0.0:0", "the port must be 1 to 65535"),
        ("0.0.0.0:65536", "the port must be 1 to 65535"),
        ("0.0.0.0:http", "the port must be 1 to 65535"),
        ("0.0.0.0:", "the port must be 1 to 65535"),
        ("0.0.0.0", "expected host:port"),
        ("8000", "expected host:port"),
        ("localhost:8000", "the host must be an IP address"),
        ("::1:8000", "an IPv6 host needs brackets"),
        ("[127.0.0.1]:8000", "brackets are only for IPv6 hosts"),
    ],
)
def test_bad_listen(listen: str, reason: str) -> None:
    line = only_problem(f'[toyvpn]\nlisten = "{listen}"')
    assert line == f"toyvpn.listen: '{listen}' — {reason}, e.g. 0.0.0.0:8000 or [::]:8000"


# --- ranges and names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/b", "a:b", "a b", "tab\there", "x" * 16, "é" * 8]
)
def test_bad_interface_name(name: str) -> None:
    line = only_problem(f"[interface]\nname = {json.dumps(name)}")
    assert line.startswith(f"interface.name: {name!r} — expected 1 to 15 characters")


def test_longest_interface_name() -> None:
    assert parse_config(f'[interface]\nname = "{"x" * 15}"').interface.name == "x" * 15


def test_egress_auto_or_interface_name() -> None:
    assert parse_config('[nat]\negress = "ens3"').nat.egress == "ens3"
    line = only_problem('[nat]\negress = "eth 0"')
    assert line.startswith("nat.egress: 'eth 0' — expected an interface name or \"auto\"")


@pytest.mark.parametrize("mtu", [575, 9001, -1])
def test_mtu_out_of_range(mtu: int) -> None:
    assert only_problem(f"[interface]\nmtu = {mtu}") == (
        f"interface.mtu: {mtu} — expected 576 to 9000 (1280 or more with an IPv6 address)"
    )


def test_mtu_with_ipv6_needs_1280() -> None:
    v6 = '[interface]\naddress = ["10.8.0.1/24", "fd00::1/64"]\n'
    assert parse_config(v6 + "mtu = 1280").interface.mtu == 1280
    assert only_problem(v6 + "mtu = 1279") == (
        "interface.mtu: 1279 — expected 1280 or more with an IPv6 address"
    )


@pytest.mark.parametrize("key", ["keepalive", "idle_timeout"])
def test_seconds_must_be_positive(key: str) -> None:
    line = only_problem(f"[toyvpn]\n{key} = 0")
    assert line == f"toyvpn.{key}: 0 — expected a number of seconds greater than 0"


@pytest.mark.parametrize("idle", ["15", "10.5"])
def test_idle_timeout_must_exceed_keepalive(idle: str) -> None:
    line = only_problem(ENABLED + f"keepalive = 15\nidle_timeout = {idle}")
    assert line == f"toyvpn.idle_timeout: {idle} — must be greater than keepalive (15)"


@pytest.mark.parametrize("domain", ["a b", "a,b", "exämple.com", "x" * 254])
def test_bad_search_domain(domain: str) -> None:
    line = only_problem(f"[toyvpn]\nsearch_domain = {json.dumps(domain)}")
    assert line.startswith("toyvpn.search_domain: ")
    assert "without spaces or commas" in line


# --- the ToyVPN pool against the interface --------------------------------------------------


def test_pool_outside_interface_subnets() -> None:
    line = only_problem(ENABLED + 'pool = "10.9.0.0/25"')
    assert line == (
        "toyvpn.pool: '10.9.0.0/25' — must lie inside an interface subnet (10.8.0.0/24)"
    )


def test_pool_larger_than_interface_subnet() -> None:
    found = problems(ENABLED + 'pool = "10.8.0.0/23"')
    assert found[0].startswith("toyvpn.pool: '10.8.0.0/23' — must lie inside an interface subnet")
    assert found[1].startswith("toyvpn.pool: '10.8.0.0/23' — contains the server's own address")


def test_pool_needs_an_ipv4_interface_address() -> None:
    text = '[interface]\naddress = ["fd00::1/64"]\nmtu = 1280\n' + ENABLED
    line = only_problem(text)
    assert line.startswith("toyvpn.pool: '10.8.0.128/25' — must lie inside an interface subnet")
    assert "has no IPv4" in line


def test_pool_containing_the_servers_address() -> None:
    line = only_problem(ENABLED + 'pool = "10.8.0.0/25"')
    assert line == (
        "toyvpn.pool: '10.8.0.0/25' — contains the server's own address 10.8.0.1; leave it out"
    )


def test_disabled_pool_is_not_checked_against_the_interface() -> None:
    # renumbering the interface must not trip over a protocol that is switched off
    cfg = parse_config('[interface]\naddress = ["10.66.0.1/24"]')
    assert cfg.toyvpn.pool == ipaddress.IPv4Network("10.8.0.128/25")


def test_find_overlaps() -> None:
    net = ipaddress.ip_network
    found = find_overlaps(
        [
            ("a", net("10.8.0.128/25")),
            ("b", net("10.8.0.0/25")),  # adjacent, not overlapping
            ("c", net("10.8.0.192/26")),  # inside a
            ("d", net("::/0")),  # another family never overlaps
            ("e", net("10.0.0.0/8")),  # overlaps a first
            ("f", net("fd00::/64")),  # inside d
        ]
    )
    assert [(key, str(err)) for key, err in found] == [
        ("c", "'10.8.0.192/26' — overlaps a (10.8.0.128/25)"),
        ("e", "'10.0.0.0/8' — overlaps a (10.8.0.128/25)"),
        ("f", "'fd00::/64' — overlaps d (::/0)"),
    ]


# --- the secret -----------------------------------------------------------------------------


def test_secret_required_when_enabled() -> None:
    assert parse_config("[toyvpn]\nenabled = false").toyvpn.secret == b""
    line = only_problem("[toyvpn]\nenabled = true")
    assert line == "toyvpn.secret: (not set) — required when enabled: set secret or secret_file"


def test_shipped_placeholder_secret_refused_when_enabled() -> None:
    line = only_problem('[toyvpn]\nenabled = true\nsecret = "change-me"')
    assert line == (
        "toyvpn.secret: 'change-me' — the shipped placeholder; choose your own secret before "
        "enabling"
    )
    assert parse_config('[toyvpn]\nenabled = false\nsecret = "change-me"').toyvpn.secret


def test_secret_under_8_bytes_is_hidden() -> None:
    line = only_problem('[toyvpn]\nenabled = true\nsecret = "short12"')
    assert line == "toyvpn.secret: (hidden) — secret under 8 bytes; use at least 8"
    assert parse_config('[toyvpn]\nenabled = true\nsecret = "8bytes!!"').toyvpn.secret == (
        b"8bytes!!"
    )


def test_secret_of_wrong_type_is_hidden() -> None:
    line = only_problem("[toyvpn]\nsecret = 987654321")
    assert line == "toyvpn.secret: (hidden) — expected a string"


def test_secret_file_relative_to_config_dir(tmp_path: Path) -> None:
    (tmp_path / "toyvpn.secret").write_bytes(b"from-a-file\n\n")
    conf = tmp_path / "trivpn.toml"
    conf.write_text('[toyvpn]\nenabled = true\nsecret_file = "toyvpn.secret"\n')
    # only one trailing newline is the editor's; the rest is the secret's
    assert load_config(conf).toyvpn.secret == b"from-a-file\n"


def test_secret_file_with_base_dir(tmp_path: Path) -> None:
    (tmp_path / "s").write_bytes(b"\x00binary\xffsecret\r\n")
    cfg = parse_config('[toyvpn]\nsecret_file = "s"', base_dir=tmp_path)
    assert cfg.toyvpn.secret == b"\x00binary\xffsecret"


def test_secret_file_short_secret(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("tiny\n")
    line = only_problem('[toyvpn]\nenabled = true\nsecret_file = "s"', base_dir=tmp_path)
    assert line == "toyvpn.secret: (hidden) — secret under 8 bytes; use at least 8"


def test_secret_and_secret_file_both_set(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("0123456789\n")
    line = only_problem('[toyvpn]\nsecret = "0123456789"\nsecret_file = "s"', base_dir=tmp_path)
    assert line == "toyvpn.secret_file: 's' — set either secret or secret_file, not both"


def test_secret_file_unreadable(tmp_path: Path) -> None:
    line = only_problem('[toyvpn]\nsecret_file = "missing"', base_dir=tmp_path)
    assert line == (
        f"toyvpn.secret_file: 'missing' — cannot read {tmp_path / 'missing'}: "
        "No such file or directory"
    )


def test_secret_file_not_a_string() -> None:
    line = only_problem("[toyvpn]\nsecret_file = 3")
    assert line == "toyvpn.secret_file: 3 — expected the path of a file holding the secret"


# --- many problems at once ------------------------------------------------------------------


def test_all_problems_are_reported(tmp_path: Path) -> None:
    conf = tmp_path / "conf.toml"
    conf.write_text(
        """
        [interface]
        name = "much-too-long-name"
        address = ["10.8.0.1/24", "10.8.0.1/33"]
        mtu = "big"
        colour = "blue"

        [nat]
        masquerade = "yes"

        [toyvpn]
        enabled = true
        secret = "s3cr3t"
        listen = "0.0.0.0:70000"
        pool = "10.8.0.129/25"
        """
    )
    with pytest.raises(ConfigError) as info:
        load_config(conf)
    found = info.value.problems
    assert [line.split(":")[0] for line in found] == [
        "interface.name",
        "interface.address[1]",
        "interface.mtu",
        "interface.colour",
        "nat.masquerade",
        "toyvpn.listen",
        "toyvpn.pool",
    ]
    assert all(" — " in line for line in found)
    assert "s3cr3t" not in str(info.value)


def test_section_problems_of_valid_sections_are_reported_together() -> None:
    found = problems(
        '[interface]\naddress = ["fd00::1/64"]\nmtu = 1000\n'
        "[toyvpn]\nenabled = true\nsecret = 'abc'\nidle_timeout = 1\n"
    )
    assert [line.split(":")[0] for line in found] == [
        "interface.mtu",
        "toyvpn.secret",
        "toyvpn.idle_timeout",
    ]


# --- never a traceback ----------------------------------------------------------------------


def _toml_string(text: str) -> str:
    # TOML basic string: escape what TOML forbids raw, keep the rest as it is
    return (
        '"'
        + "".join(
            f"\\u{ord(c):04x}" if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F else c for c in text
        )
        + '"'
    )


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_string(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return _toml_string(value)
    return repr(value)


_SCALARS = st.one_of(
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["10.8.0.1/24", "fd00::1/64", "0.0.0.0:1", "[::]:80", "10.8.0.0/25", "auto"]),
)
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
_KEYS = st.sampled_from(
    [
        *("name", "address", "mtu", "masquerade", "egress", "enabled", "listen", "secret"),
        *("secret_file", "pool", "dns", "routes", "search_domain", "keepalive", "idle_timeout"),
        "bogus",
    ]
)
_SECTIONS = st.dictionaries(
    st.sampled_from(["interface", "nat", "toyvpn", "extra"]),
    st.dictionaries(_KEYS, _VALUES, max_size=4) | _SCALARS,
    max_size=3,
)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(_SECTIONS)
def test_any_document_gives_a_config_or_config_error(doc: dict[str, Any]) -> None:
    text = "\n".join(f"{_toml_string(k)} = {_toml(v)}" for k, v in doc.items())
    try:
        assert isinstance(parse_config(text, base_dir=Path("/nonexistent")), Config)
    except ConfigError as e:
        assert e.problems
        assert all(" — " in line for line in e.problems)
