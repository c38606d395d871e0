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
    PublicEndpoint,
    WireGuardConfig,
    WireGuardPeerConfig,
    default_config,
    find_duplicates,
    find_overlaps,
    load_config,
    parse_config,
)
from trivpn.proto.wireguard import keys

REPO = Path(__file__).resolve().parents[2]
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
    # it turns WireGuard on (off when the section is absent); its key file need not exist yet,
    # and where it does (a server that ran), the key in it is not a default
    assert cfg.wireguard.enabled is True
    assert cfg.wireguard.private_key_file == Path("/var/lib/trivpn/server.key")
    assert cfg.wireguard.peers == ()
    wireguard_off = attrs.evolve(cfg.wireguard, enabled=False, private_key=None)
    shipped = attrs.evolve(cfg, toyvpn=unplaceholdered, wireguard=wireguard_off, source="<string>")
    assert shipped == default_config()


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
        "dns, routes, search_domain, keepalive, idle_timeout, rate_down, rate_up"
    )


def test_unknown_section_and_odd_key() -> None:
    found = problems('[wirequard]\n[interface]\n"my key" = 1\n')
    assert found == [
        'interface."my key": unknown key — allowed: name, address, mtu',
        "wirequard: unknown key — allowed: interface, nat, toyvpn, wireguard, state, metrics, web",
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
    # against a fixed list: the networks are not compared with each other
    assert [
        k
        for k, _ in find_overlaps(
            [("x", net("10.0.0.0/8")), ("y", net("10.1.0.0/16"))],
            against=[("p", net("10.9.0.0/24"))],
        )
    ] == ["x"]


def test_find_duplicates() -> None:
    net = ipaddress.ip_network
    found = find_duplicates(
        [("a", net("10.0.0.0/8")), ("b", net("10.1.0.0/16")), ("c", net("10.0.0.0/8"))]
    )
    assert [(key, str(err)) for key, err in found] == [
        ("c", "'10.0.0.0/8' — also a; a network is routed to one peer (nested ones may differ)")
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


# --- WireGuard ------------------------------------------------------------------------------

SERVER_KEY = keys.genkey(lambda n: b"\x01" * n)
SERVER_PUB = keys.pubkey(SERVER_KEY)
ALICE_PUB = keys.pubkey(keys.genkey(lambda n: b"\x02" * n))
BOB_PUB = keys.pubkey(keys.genkey(lambda n: b"\x03" * n))
PSK = keys.genpsk(lambda n: b"\x04" * n)
WG = f'[wireguard]\nenabled = true\nprivate_key = "{SERVER_KEY}"\n'


def peer(name: str = "alice", public_key: str = ALICE_PUB, ips: str = '"10.8.0.2/32"') -> str:
    return (
        f'[[wireguard.peers]]\nname = "{name}"\npublic_key = "{public_key}"\n'
        f"allowed_ips = [{ips}]\n"
    )


def test_wireguard_off_without_its_section() -> None:
    wg = parse_config("").wireguard
    assert wg == WireGuardConfig()
    assert (wg.enabled, wg.listen, wg.under_load_rate, wg.peers) == (
        False,
        Endpoint("0.0.0.0", 51820),
        500.0,
        (),
    )
    assert (wg.private_key, wg.private_key_file) == (None, Path("/var/lib/trivpn/server.key"))


def test_full_wireguard_config() -> None:
    cfg = parse_config(
        f"""
        [wireguard]
        enabled = true
        listen = "[::]:51821"
        private_key = "{SERVER_KEY}"
        under_load_rate = 20

        [[wireguard.peers]]
        name = "alice@laptop"
        public_key = "{ALICE_PUB}"
        allowed_ips = ["10.8.0.2/32", "fd00:8::2/128"]
        preshared_key = "{PSK}"
        endpoint = "203.0.113.7:51820"
        persistent_keepalive = 25

        [[wireguard.peers]]
        name = "site-b"
        public_key = "{BOB_PUB}"
        allowed_ips = ["192.168.50.0/24"]  # outside the interface subnets: a site behind bob
        endpoint = "[2001:db8::7]:51820"
        """
    )
    wg = cfg.wireguard
    assert (wg.enabled, wg.listen, wg.under_load_rate) == (True, Endpoint("::", 51821), 20.0)
    assert isinstance(wg.under_load_rate, float)
    assert wg.private_key == keys.parse_key(SERVER_KEY)
    assert wg.private_key_file is None  # the key is inline
    alice, bob = wg.peers
    assert alice == WireGuardPeerConfig(
        name="alice@laptop",
        public_key=keys.parse_key(ALICE_PUB),
        allowed_ips=(ipaddress.ip_network("10.8.0.2/32"), ipaddress.ip_network("fd00:8::2/128")),
        preshared_key=keys.parse_key(PSK),
        endpoint=Endpoint("203.0.113.7", 51820),
        persistent_keepalive=25,
    )
    assert bob.allowed_ips == (ipaddress.ip_network("192.168.50.0/24"),)
    assert (bob.preshared_key, bob.endpoint, bob.persistent_keepalive) == (
        None,
        Endpoint("2001:db8::7", 51820),
        None,
    )
    # secrets stay out of reprs
    assert SERVER_KEY not in repr(cfg) and str(keys.parse_key(SERVER_KEY)) not in repr(cfg)
    assert str(keys.parse_key(PSK)) not in repr(cfg)


def test_shipped_peer_example_works_once_filled_in() -> None:
    text = SHIPPED.read_text()
    assert "\n# [[wireguard.peers]]\n" in text  # commented out: the shipped file has no peers
    block = text.split("\n# [[wireguard.peers]]\n")[1].split("\n\n")[0]
    example = "\n".join(
        line.removeprefix("# ")
        for line in block.splitlines()
        if line.startswith("# ") and "=" in line
    )
    assert example.count("base64…") == 2  # public_key and preshared_key
    filled = example.replace('"base64…"', f'"{ALICE_PUB}"', 1).replace('"base64…"', f'"{PSK}"')
    cfg = parse_config(WG + "[[wireguard.peers]]\n" + filled)
    (alice,) = cfg.wireguard.peers
    assert (alice.name, alice.persistent_keepalive) == ("alice", 25)
    assert alice.preshared_key == keys.parse_key(PSK)
    assert alice.enabled and alice.expires is not None and alice.expires.year == 2027
    assert (str(alice.quota), alice.rate_down, alice.rate_up) == (
        "50GiB/month",
        20 * 10**6,
        5 * 10**6,
    )


@pytest.mark.parametrize(
    ("key", "where"),
    [
        ("public_key", "peer"),
        ("preshared_key", "peer"),
        ("private_key", "server"),
    ],
)
@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("c2hvcnQ=", "a key must be 44 base64 characters (32 bytes), got 8 characters"),
        ("A" * 43 + "B", "a key must be 44 base64 characters ending in exactly one '='"),
        ("!" * 43 + "=", "a key must contain only base64 characters (A-Z a-z 0-9 + /)"),
        ("A" * 42 + "B=", "a key must be the canonical base64 encoding of 32 bytes"),
    ],
)
def test_bad_key(key: str, where: str, bad: str, reason: str) -> None:
    if where == "peer":
        text = WG + peer() + f'{key} = "{bad}"\n'
        text = text.replace(f'public_key = "{ALICE_PUB}"\n', "") if key == "public_key" else text
        path = f"wireguard.peers[0].{key}"
    else:
        text, path = f'[wireguard]\n{key} = "{bad}"\n', f"wireguard.{key}"
    shown = repr(bad) if key == "public_key" else "(hidden)"  # public keys are not secret
    assert only_problem(text) == f"{path}: {shown} — {reason}"


def test_key_of_wrong_type() -> None:
    line = only_problem(WG + peer().replace(f'"{ALICE_PUB}"', "32"))
    assert line == (
        "wireguard.peers[0].public_key: 32 — expected a key: 44 base64 characters, "
        "as `trivpn genkey` prints"
    )


def test_peer_without_required_keys() -> None:
    found = problems(WG + '[[wireguard.peers]]\nendpoint = "203.0.113.7:51820"\n')
    assert found == [
        "wireguard.peers[0].name: (not set) — required",
        "wireguard.peers[0].public_key: (not set) — required",
        "wireguard.peers[0].allowed_ips: (not set) — required",
    ]


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "ålice", "a/b"])
def test_bad_peer_name(name: str) -> None:
    line = only_problem(WG + peer(name=name))
    assert line == (
        f"wireguard.peers[0].name: {name!r} — expected 1 to 64 characters from A-Z a-z 0-9 _ . @ -"
    )


def test_two_peers_with_one_name() -> None:
    line = only_problem(WG + peer() + peer(public_key=BOB_PUB, ips='"10.8.0.3/32"'))
    assert line == "wireguard.peers[1].name: 'alice' — peers[0] has this name too"


def test_two_peers_with_one_public_key() -> None:
    line = only_problem(WG + peer() + peer(name="bob", ips='"10.8.0.3/32"'))
    assert line == (
        f"wireguard.peers[1].public_key: {ALICE_PUB!r} — peers[0] (alice) has this key too; "
        "one peer per key"
    )


def test_peer_with_the_servers_own_public_key() -> None:
    line = only_problem(WG + peer(public_key=SERVER_PUB))
    assert line == (
        f"wireguard.peers[0].public_key: {SERVER_PUB!r} — the server's own public key; "
        "expected the peer's"
    )


def test_peer_with_the_public_key_of_the_key_file(tmp_path: Path) -> None:
    (tmp_path / "server.key").write_text(SERVER_KEY + "\n")
    text = '[wireguard]\nprivate_key_file = "server.key"\n' + peer(public_key=SERVER_PUB)
    line = only_problem(text, base_dir=tmp_path)
    assert line.startswith(f"wireguard.peers[0].public_key: {SERVER_PUB!r} — the server's own")


def test_allowed_ips_with_host_bits() -> None:
    line = only_problem(WG + peer(ips='"10.8.0.2/32", "10.9.0.1/24"'))
    assert line == (
        "wireguard.peers[0].allowed_ips[1]: '10.9.0.1/24' — has host bits set; "
        "did you mean 10.9.0.0/24?"
    )


@pytest.mark.parametrize("bad", ["10.8.0.2", "10.8.0.2/33", "fd00::/129", "alice"])
def test_allowed_ips_not_a_network(bad: str) -> None:
    line = only_problem(WG + peer(ips=f'"{bad}"'))
    assert line == (
        f"wireguard.peers[0].allowed_ips[0]: '{bad}' — expected an IP network with prefix, "
        "e.g. 10.8.0.2/32"
    )


def test_allowed_ips_given_to_two_peers() -> None:
    text = WG + peer(ips='"10.8.0.0/29"') + peer("bob", BOB_PUB, '"fd00::/64", "10.8.0.0/29"')
    line = only_problem(text)
    assert line == (
        "wireguard.peers[1].allowed_ips[1]: '10.8.0.0/29' — also peers[0].allowed_ips[0]; "
        "a network is routed to one peer (nested ones may differ)"
    )
    # refused even when WireGuard is off: the peers are still listed together
    assert problems(text.replace("enabled = true", "enabled = false")) == [line]


def test_allowed_ips_may_nest_across_peers() -> None:
    # a site-to-site gateway routes 10.0.0.0/8; a peer inside it keeps its own /16 and /32
    text = (
        WG
        + peer(ips='"10.8.0.2/32", "10.0.0.0/8"')
        + peer("bob", BOB_PUB, '"10.1.0.0/16", "10.8.0.0/29"')
    )
    cfg = parse_config(text)
    assert [list(map(str, p.allowed_ips)) for p in cfg.wireguard.peers] == [
        ["10.8.0.2/32", "10.0.0.0/8"],
        ["10.1.0.0/16", "10.8.0.0/29"],
    ]


def test_allowed_ips_overlapping_the_toyvpn_pool() -> None:
    text = WG + peer(ips='"10.8.0.0/16"') + ENABLED
    line = only_problem(text)
    assert line == (
        "wireguard.peers[0].allowed_ips[0]: '10.8.0.0/16' — overlaps toyvpn.pool (10.8.0.128/25)"
    )
    # a switched-off protocol's ranges don't matter
    toyvpn_off = text.replace("[toyvpn]\nenabled = true", "[toyvpn]\nenabled = false")
    assert parse_config(toyvpn_off).wireguard.peers[0].name == "alice"
    wg_off = text.replace("[wireguard]\nenabled = true", "[wireguard]\nenabled = false")
    assert parse_config(wg_off).toyvpn.enabled


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("203.0.113.7", "expected host:port"),
        ("vpn.example.com:51820", "the host must be an IP address"),
        ("2001:db8::7:51820", "an IPv6 host needs brackets"),
        ("203.0.113.7:0", "the port must be 1 to 65535"),
    ],
)
def test_bad_peer_endpoint(endpoint: str, reason: str) -> None:
    line = only_problem(WG + peer() + f'endpoint = "{endpoint}"\n')
    assert line == (
        f"wireguard.peers[0].endpoint: '{endpoint}' — {reason}, "
        "e.g. 203.0.113.7:51820 or [2001:db8::7]:51820"
    )


@pytest.mark.parametrize("endpoint", ["0.0.0.0:51820", "[::]:51820"])
def test_peer_endpoint_cannot_be_a_wildcard(endpoint: str) -> None:
    line = only_problem(WG + peer() + f'endpoint = "{endpoint}"\n')
    assert line == (
        f"wireguard.peers[0].endpoint: '{endpoint}' — expected the peer's own address, "
        "not a wildcard"
    )


def test_bad_wireguard_listen() -> None:
    line = only_problem('[wireguard]\nlisten = "0.0.0.0"')
    assert (
        line == "wireguard.listen: '0.0.0.0' — expected host:port, e.g. 0.0.0.0:51820 or [::]:51820"
    )


@pytest.mark.parametrize("seconds", [0, -5, 65536])
def test_persistent_keepalive_out_of_range(seconds: int) -> None:
    line = only_problem(WG + peer() + f"persistent_keepalive = {seconds}\n")
    assert line == (
        f"wireguard.peers[0].persistent_keepalive: {seconds} — expected 1 to 65535 seconds; "
        "leave the key out for none"
    )


@pytest.mark.parametrize("rate", ["0", "-1"])
def test_under_load_rate_must_be_positive(rate: str) -> None:
    line = only_problem(f"[wireguard]\nunder_load_rate = {rate}")
    assert line == (
        f"wireguard.under_load_rate: {rate} — expected a number of messages per second "
        "greater than 0"
    )


def test_private_key_and_private_key_file_both_set() -> None:
    line = only_problem(WG + 'private_key_file = "server.key"')
    assert line == (
        "wireguard.private_key_file: 'server.key' — set either private_key or private_key_file, "
        "not both"
    )


def test_missing_private_key_file_is_generated_later(tmp_path: Path) -> None:
    conf = tmp_path / "trivpn.toml"
    conf.write_text('[wireguard]\nenabled = true\nprivate_key_file = "keys/server.key"\n')
    wg = load_config(conf).wireguard
    assert wg.private_key is None
    assert wg.private_key_file == tmp_path / "keys" / "server.key"


def test_private_key_file_relative_to_config_dir(tmp_path: Path) -> None:
    (tmp_path / "server.key").write_text(SERVER_KEY + "\n")
    conf = tmp_path / "trivpn.toml"
    conf.write_text('[wireguard]\nenabled = true\nprivate_key_file = "server.key"\n')
    wg = load_config(conf).wireguard
    assert wg.private_key == keys.parse_key(SERVER_KEY)
    assert wg.private_key_file == tmp_path / "server.key"
    assert "private_key=" not in repr(wg)


def test_private_key_file_readable_by_others_is_accepted(tmp_path: Path) -> None:
    # not refused: the server warns about it when it reads the key
    key_file = tmp_path / "server.key"
    key_file.write_text(SERVER_KEY)
    key_file.chmod(0o644)
    cfg = parse_config('[wireguard]\nprivate_key_file = "server.key"', base_dir=tmp_path)
    assert cfg.wireguard.private_key == keys.parse_key(SERVER_KEY)


def test_private_key_file_unreadable(tmp_path: Path) -> None:
    # a directory: unreadable even for root, unlike a chmod 000 file
    (tmp_path / "keydir").mkdir()
    line = only_problem('[wireguard]\nprivate_key_file = "keydir"', base_dir=tmp_path)
    assert line == (
        f"wireguard.private_key_file: 'keydir' — cannot read {tmp_path / 'keydir'}: Is a directory"
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"not a key\n", "a key must be 44 base64 characters (32 bytes), got 9 characters"),
        (b"\xff" * 44, "the file holds no key: expected 44 base64 characters"),
        (b"", "a key must be 44 base64 characters (32 bytes), got 0 characters"),
    ],
)
def test_private_key_file_with_a_bad_key(tmp_path: Path, content: bytes, reason: str) -> None:
    (tmp_path / "server.key").write_bytes(content)
    line = only_problem('[wireguard]\nprivate_key_file = "server.key"', base_dir=tmp_path)
    assert line == f"wireguard.private_key_file: 'server.key' — {tmp_path / 'server.key'}: {reason}"


def test_private_key_file_not_a_path() -> None:
    line = only_problem("[wireguard]\nprivate_key_file = 3")
    assert line == "wireguard.private_key_file: 3 — expected the path of a file holding the secret"


def test_enabled_without_any_private_key() -> None:
    # "" turns the default private_key_file off; then nothing names a key
    text = '[wireguard]\nenabled = true\nprivate_key_file = ""'
    line = only_problem(text)
    assert line == (
        "wireguard.private_key: (not set) — required when enabled: set private_key or "
        "private_key_file"
    )
    wg = parse_config(text.replace("true", "false")).wireguard
    assert (wg.private_key, wg.private_key_file) == (None, None)


def test_preshared_key_file(tmp_path: Path) -> None:
    (tmp_path / "alice.psk").write_text(PSK + "\n")
    text = WG + peer() + 'preshared_key_file = "alice.psk"\n'
    assert parse_config(text, base_dir=tmp_path).wireguard.peers[0].preshared_key == (
        keys.parse_key(PSK)
    )


def test_preshared_key_file_with_a_bad_key(tmp_path: Path) -> None:
    (tmp_path / "alice.psk").write_text("s3cr3t-but-no-key\n")
    text = WG + peer() + 'preshared_key_file = "alice.psk"\n'
    line = only_problem(text, base_dir=tmp_path)
    assert line == (
        "wireguard.peers[0].preshared_key: (hidden) — a key must be 44 base64 characters "
        "(32 bytes), got 17 characters"
    )


def test_preshared_key_and_preshared_key_file_both_set(tmp_path: Path) -> None:
    (tmp_path / "alice.psk").write_text(PSK + "\n")
    text = WG + peer() + f'preshared_key = "{PSK}"\npreshared_key_file = "alice.psk"\n'
    line = only_problem(text, base_dir=tmp_path)
    assert line == (
        "wireguard.peers[0].preshared_key_file: 'alice.psk' — set either preshared_key or "
        "preshared_key_file, not both"
    )
    assert PSK not in line


def test_unknown_key_in_a_peer() -> None:
    line = only_problem(WG + peer() + "keepalive = 25\n")
    assert line == (
        "wireguard.peers[0].keepalive: unknown key — allowed: name, public_key, allowed_ips, "
        "preshared_key, preshared_key_file, endpoint, persistent_keepalive, enabled, expires, "
        "quota, rate_down, rate_up"
    )


def test_peers_must_be_a_list_of_tables() -> None:
    assert only_problem("[wireguard]\npeers = 3") == (
        "wireguard.peers: 3 — expected a list, e.g. [...]"
    )
    assert only_problem("[wireguard]\npeers = [3]") == (
        "wireguard.peers[0]: 3 — expected a table: a [section] or { key = value, ... }"
    )


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
_KEY_TEXTS = st.sampled_from([keys.encode_key(bytes(range(32))), keys.encode_key(b"\xff" * 32)])
_PEER_KEYS = st.sampled_from(
    [
        *("name", "public_key", "allowed_ips", "preshared_key", "preshared_key_file"),
        *("endpoint", "persistent_keepalive", "bogus"),
    ]
)
_PEERS = st.lists(st.dictionaries(_PEER_KEYS, _VALUES | _KEY_TEXTS, max_size=5), max_size=3)
_KEYS = st.sampled_from(
    [
        *("name", "address", "mtu", "masquerade", "egress", "enabled", "listen", "secret"),
        *("secret_file", "pool", "dns", "routes", "search_domain", "keepalive", "idle_timeout"),
        *("private_key", "private_key_file", "under_load_rate", "peers"),
        "bogus",
    ]
)
_SECTIONS = st.dictionaries(
    st.sampled_from(["interface", "nat", "toyvpn", "wireguard", "extra"]),
    st.dictionaries(_KEYS, _VALUES | _KEY_TEXTS | _PEERS, max_size=4) | _SCALARS,
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


# --- what `trivpn peer add` needs: client config keys and the state directory ----------------


def test_client_keys_and_state_dir_defaults() -> None:
    cfg = parse_config("")
    wg = cfg.wireguard
    assert wg.public_endpoint is None  # no sensible default: `peer add` asks for it
    assert wg.client_dns == (ipaddress.ip_address("1.1.1.1"),)
    assert wg.client_allowed_ips == (
        ipaddress.ip_network("0.0.0.0/0"),
        ipaddress.ip_network("::/0"),
    )
    assert cfg.state.dir == Path("/var/lib/trivpn")
    shipped = load_config(SHIPPED)
    assert "\n# public_endpoint = " in SHIPPED.read_text()  # documented, left unset
    assert (shipped.wireguard.client_dns, shipped.state) == (wg.client_dns, cfg.state)


def test_client_keys_set() -> None:
    wg = parse_config(
        """
        [wireguard]
        public_endpoint = "[2001:db8::1]:51820"
        client_dns = ["10.8.0.1", "fd00:8::1"]
        client_allowed_ips = ["10.8.0.0/24", "192.168.1.0/24"]
        """
    ).wireguard
    assert wg.public_endpoint == PublicEndpoint("2001:db8::1", 51820)
    assert wg.client_dns == (ipaddress.ip_address("10.8.0.1"), ipaddress.ip_address("fd00:8::1"))
    assert wg.client_allowed_ips == (
        ipaddress.ip_network("10.8.0.0/24"),
        ipaddress.ip_network("192.168.1.0/24"),
    )
    assert parse_config("[wireguard]\nclient_dns = []\n").wireguard.client_dns == ()


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("vpn.example.com:51820", "vpn.example.com", 51820, "vpn.example.com:51820"),
        ("VPN.Example.com.:1", "VPN.Example.com.", 1, "VPN.Example.com.:1"),
        ("localhost:65535", "localhost", 65535, "localhost:65535"),
        ("xn--bcher-kva.example:51820", "xn--bcher-kva.example", 51820, None),
        ("203.0.113.1:51820", "203.0.113.1", 51820, "203.0.113.1:51820"),
        ("[2001:DB8:0::1]:51820", "2001:db8::1", 51820, "[2001:db8::1]:51820"),
    ],
)
def test_public_endpoint_parse(text: str, host: str, port: int, shown: str | None) -> None:
    endpoint = PublicEndpoint.parse(text)
    assert (endpoint.host, endpoint.port) == (host, port)
    assert str(endpoint) == (shown or text)
    key = parse_config(f'[wireguard]\npublic_endpoint = "{text}"\n').wireguard.public_endpoint
    assert key == endpoint


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"vpn.example.com"', "expected host:port"),
        ('":51820"', "expected host:port"),
        ('"vpn.example.com:0"', "the port must be 1 to 65535"),
        ('"vpn.example.com:x"', "the port must be 1 to 65535"),
        ('"2001:db8::1:51820"', "an IPv6 host needs brackets"),
        ('"[203.0.113.1]:51820"', "an IPv6 host needs brackets; others take none"),
        ('"[vpn.example.com]:51820"', "brackets are only for IPv6 addresses"),
        ('"0.0.0.0:51820"', "a wildcard address cannot be dialled"),
        ('"[::]:51820"', "a wildcard address cannot be dialled"),
        ('"vpn_1.example.com:51820"', "the host must be a DNS name or an IP address"),
        ('"-vpn.example.com:51820"', "the host must be a DNS name or an IP address"),
        ('"vpn..example.com:51820"', "the host must be a DNS name or an IP address"),
        ('"10.8.0:51820"', "the host must be a DNS name or an IP address"),
        (f'"{"a" * 64}.example.com:51820"', "the host must be a DNS name or an IP address"),
        ("51820", "expected host:port"),
    ],
)
def test_bad_public_endpoint(value: str, reason: str) -> None:
    line = only_problem(f"[wireguard]\npublic_endpoint = {value}\n")
    assert line.startswith("wireguard.public_endpoint: ")
    assert reason in line
    assert line.endswith("e.g. vpn.example.com:51820, 203.0.113.1:51820 or [2001:db8::1]:51820")


def test_bad_client_keys_each_reported() -> None:
    found = problems(
        """
        [wireguard]
        client_dns = ["dns.example.com", "1.1.1.1"]
        client_allowed_ips = ["0.0.0.0/0", "10.8.0.1/24", "::"]
        """
    )
    assert found == [
        "wireguard.client_dns[0]: 'dns.example.com' — expected an IP address, e.g. 1.1.1.1",
        "wireguard.client_allowed_ips[1]: '10.8.0.1/24' — has host bits set; "
        "did you mean 10.8.0.0/24?",
        "wireguard.client_allowed_ips[2]: '::' — expected an IP network with prefix, "
        "e.g. 0.0.0.0/0",
    ]
    assert only_problem("[wireguard]\nclient_allowed_ips = []\n") == (
        'wireguard.client_allowed_ips: [] — expected at least one network, e.g. ["0.0.0.0/0", '
        '"::/0"]'
    )
    assert only_problem('[wireguard]\nclient_dns = "1.1.1.1"\n') == (
        "wireguard.client_dns: '1.1.1.1' — expected a list, e.g. [...]"
    )


def test_state_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    file = tmp_path / "etc" / "trivpn.toml"
    file.parent.mkdir()
    file.write_text('[state]\ndir = "state"\n')
    assert load_config(file).state.dir == tmp_path / "etc" / "state"
    file.write_text(f'[state]\ndir = "{tmp_path}/abs"\n')
    assert load_config(file).state.dir == tmp_path / "abs"
    assert parse_config('[state]\ndir = "rel"\n').state.dir == Path("rel")


@pytest.mark.parametrize("value", ['""', "3", "[]", '"a\\u0000b"'])
def test_bad_state_dir(value: str) -> None:
    line = only_problem(f"[state]\ndir = {value}\n")
    assert line.startswith("state.dir: ")
    assert line.endswith(' — expected the path of a directory, e.g. "/var/lib/trivpn"')


def test_unknown_key_in_state() -> None:
    assert only_problem("[state]\ndirectory = 'x'\n") == (
        "state.directory: unknown key — allowed: dir, database, database_password_file, node"
    )


# --- [metrics] ------------------------------------------------------------------------------


def test_metrics_off_by_default() -> None:
    assert parse_config("").metrics.listen is None
    assert parse_config('[metrics]\nlisten = ""\n').metrics.listen is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9586", Endpoint("127.0.0.1", 9586)),
        ("[::1]:9586", Endpoint("::1", 9586)),
        ("0.0.0.0:9100", Endpoint("0.0.0.0", 9100)),
    ],
)
def test_metrics_listen(text: str, expected: Endpoint) -> None:
    assert parse_config(f'[metrics]\nlisten = "{text}"\n').metrics.listen == expected


@pytest.mark.parametrize(
    ("value", "line"),
    [
        (
            "9586",
            "metrics.listen: 9586 — expected host:port, e.g. 127.0.0.1:9586 or [::1]:9586; "
            '"" turns metrics off',
        ),
        (
            '"localhost:9586"',
            "metrics.listen: 'localhost:9586' — the host must be an IP address, e.g. "
            '127.0.0.1:9586 or [::1]:9586; "" turns metrics off',
        ),
        (
            '"127.0.0.1:0"',
            "metrics.listen: '127.0.0.1:0' — the port must be 1 to 65535, e.g. "
            '127.0.0.1:9586 or [::1]:9586; "" turns metrics off',
        ),
        (
            '"::1:9586"',
            "metrics.listen: '::1:9586' — an IPv6 host needs brackets, e.g. "
            '127.0.0.1:9586 or [::1]:9586; "" turns metrics off',
        ),
    ],
)
def test_metrics_listen_rejected(value: str, line: str) -> None:
    assert only_problem(f"[metrics]\nlisten = {value}\n") == line


def test_metrics_unknown_key_names_the_allowed_one() -> None:
    assert only_problem("[metrics]\nport = 9586\n") == (
        "metrics.port: unknown key — allowed: listen"
    )


# --- [wireguard] fwmark ---------------------------------------------------------------------


def test_fwmark_defaults_to_none_and_takes_toml_integers() -> None:
    assert parse_config("").wireguard.fwmark == 0
    assert parse_config(WG + "fwmark = 0x1234\n").wireguard.fwmark == 0x1234
    assert parse_config(WG + "fwmark = 4294967295\n").wireguard.fwmark == 2**32 - 1


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("-1", "wireguard.fwmark: -1 — expected 0 (none) to 4294967295 (0xffffffff)"),
        (
            "4294967296",
            "wireguard.fwmark: 4294967296 — expected 0 (none) to 4294967295 (0xffffffff)",
        ),
        ('"0x1234"', "wireguard.fwmark: '0x1234' — expected an integer"),
        ("true", "wireguard.fwmark: true — expected an integer"),
    ],
)
def test_bad_fwmark_names_key_and_value(value: str, line: str) -> None:
    assert only_problem(WG + f"fwmark = {value}\n") == line
