"""trivpn.proto.endpoints: the one host:port parser, and the formatter it reads back."""

import ipaddress

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from trivpn.proto.endpoints import (
    EndpointSyntaxError,
    format_endpoint,
    join_host_port,
    parse_host_port,
)

ports = st.integers(min_value=1, max_value=65535)
ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6)
dns_names = st.lists(
    st.from_regex(r"[A-Za-z]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?", fullmatch=True),
    min_size=1,
    max_size=4,
).map(".".join)
# text made of what host:port is made of, so the parser's branches are all reached
endpointish = st.text(alphabet="0123456789abcdefx.:[]%-_ \n٣", max_size=48)
REASONS = {
    "expected host:port",
    "an IPv6 host needs brackets",
    "brackets are only for IPv6 hosts",
    "an IPv6 host needs brackets; others take none",
    "brackets are only for IPv6 addresses",
    "the host must be an IP address",
    "the host must be a DNS name or an IP address",
    "the port must be 1 to 65535",
}


@settings(deadline=None)
@given(st.one_of(ipv4, ipv6), ports, st.booleans())
def test_format_then_parse_gives_the_address_back(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, names: bool
) -> None:
    assert parse_host_port(join_host_port(str(ip), port), names=names) == (str(ip), port)


@settings(deadline=None)
@given(ipv6, ports)
def test_ipv6_is_read_in_its_normal_form(ip: ipaddress.IPv6Address, port: int) -> None:
    assert parse_host_port(f"[{ip.exploded.upper()}]:{port}") == (str(ip), port)


@settings(deadline=None)
@given(dns_names, ports)
def test_names_only_where_allowed(name: str, port: int) -> None:
    text = join_host_port(name, port)
    assert parse_host_port(text, names=True) == (name, port)
    with pytest.raises(EndpointSyntaxError, match=r"^the host must be an IP address$"):
        parse_host_port(text)


@settings(deadline=None, max_examples=500)
@given(st.one_of(st.text(max_size=64), endpointish), st.booleans())
@example("1.2.3.4:" + "9" * 5000, False)  # more digits than int() converts
@example("[::1]:" + "0" * 5000 + "1", False)
def test_junk_raises_only_the_parser_error(text: str, names: bool) -> None:
    try:
        host, port = parse_host_port(text, names=names)
    except EndpointSyntaxError as e:
        assert str(e) in REASONS  # what is wrong, in words the callers' messages pin
        return
    assert 1 <= port <= 65535
    # whatever it accepts, it writes and reads back the same
    assert parse_host_port(join_host_port(host, port), names=names) == (host, port)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1:51820", ("192.0.2.1", 51820)),
        ("192.0.2.1:00080", ("192.0.2.1", 80)),
        ("[::]:1", ("::", 1)),
        ("[::ffff:192.0.2.1]:65535", ("::ffff:c000:201", 65535)),
        ("[fe80::1%wg0]:1", ("fe80::1%wg0", 1)),
    ],
)
def test_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(
    ("text", "names", "reason"),
    [
        ("192.0.2.1", False, "expected host:port"),
        (":51820", True, "expected host:port"),
        ("", False, "expected host:port"),
        ("2001:db8::1:51820", False, "an IPv6 host needs brackets"),
        ("2001:db8::1:51820", True, "an IPv6 host needs brackets"),
        ("[192.0.2.1]:51820", False, "brackets are only for IPv6 hosts"),
        ("[192.0.2.1]:51820", True, "an IPv6 host needs brackets; others take none"),
        ("[vpn.example.com]:51820", True, "brackets are only for IPv6 addresses"),
        ("vpn.example.com:51820", False, "the host must be an IP address"),
        ("vpn_1.example.com:51820", True, "the host must be a DNS name or an IP address"),
        ("10.8.0:51820", True, "the host must be a DNS name or an IP address"),
        ("localhost:0", False, "the host must be an IP address"),  # the host first
        ("192.0.2.1:0", False, "the port must be 1 to 65535"),
        ("192.0.2.1:65536", True, "the port must be 1 to 65535"),
        ("192.0.2.1:+80", False, "the port must be 1 to 65535"),
        ("192.0.2.1:٣", False, "the port must be 1 to 65535"),
        ("192.0.2.1:", False, "the port must be 1 to 65535"),
    ],
)
def test_what_is_wrong(text: str, names: bool, reason: str) -> None:
    with pytest.raises(EndpointSyntaxError) as info:
        parse_host_port(text, names=names)
    assert str(info.value) == reason
    assert reason in REASONS
    assert isinstance(info.value, ValueError)  # callers that catch ValueError keep working


@given(ipv4, ports)
def test_received_v4_mapped_addresses_are_shown_as_ipv4(
    ip: ipaddress.IPv4Address, port: int
) -> None:
    assert format_endpoint((f"::ffff:{ip}", port, 0, 0)) == f"{ip}:{port}"
    assert parse_host_port(format_endpoint((f"::ffff:{ip}", port, 0, 0))) == (str(ip), port)
