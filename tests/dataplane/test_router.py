import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from trivpn.dataplane.router import Router


def v4_packet(dst: str) -> bytes:
    return bytes([0x45]) + bytes(15) + ipaddress.IPv4Address(dst).packed


def v6_packet(dst: str) -> bytes:
    return bytes([0x60]) + bytes(23) + ipaddress.IPv6Address(dst).packed


def test_longest_prefix_wins_v4() -> None:
    r: Router[str] = Router()
    r.add(ipaddress.ip_network("0.0.0.0/0"), "default")
    r.add(ipaddress.ip_network("10.8.0.0/24"), "subnet")
    r.add(ipaddress.ip_network("10.8.0.130/32"), "host")
    assert r.lookup_packet(v4_packet("10.8.0.130")) == "host"
    assert r.lookup_packet(v4_packet("10.8.0.131")) == "subnet"
    assert r.lookup_packet(v4_packet("192.0.2.1")) == "default"
    assert r.remove(ipaddress.ip_network("10.8.0.130/32")) == "host"
    assert r.lookup_packet(v4_packet("10.8.0.130")) == "subnet"
    assert len(r) == 2


def test_longest_prefix_wins_v6_and_families_are_separate() -> None:
    r: Router[str] = Router()
    r.add(ipaddress.ip_network("fd00::/8"), "ula")
    r.add(ipaddress.ip_network("fd00:8::/64"), "vpn")
    r.add(ipaddress.ip_network("fd00:8::2/128"), "peer")
    assert r.lookup_packet(v6_packet("fd00:8::2")) == "peer"
    assert r.lookup_packet(v6_packet("fd00:8::3")) == "vpn"
    assert r.lookup_packet(v6_packet("fd01::1")) == "ula"
    assert r.lookup_packet(v6_packet("2001:db8::1")) is None
    assert r.lookup_packet(v4_packet("10.0.0.1")) is None


def test_malformed_packets_route_nowhere() -> None:
    r: Router[str] = Router()
    r.add(ipaddress.ip_network("0.0.0.0/0"), "default")
    r.add(ipaddress.ip_network("::/0"), "default6")
    assert r.lookup_packet(b"") is None
    assert r.lookup_packet(b"\x45" * 19) is None
    assert r.lookup_packet(bytes([0x60]) + bytes(30)) is None  # IPv6 shorter than its header
    assert r.lookup_packet(bytes([0x50]) + bytes(40)) is None  # version 5


def test_remove_owner_removes_every_network() -> None:
    r: Router[str] = Router()
    r.add(ipaddress.ip_network("10.8.0.2/32"), "a")
    r.add(ipaddress.ip_network("fd00::2/128"), "a")
    r.add(ipaddress.ip_network("10.8.0.3/32"), "b")
    assert sorted(map(str, r.remove_owner("a"))) == ["10.8.0.2/32", "fd00::2/128"]
    assert len(r) == 1


networks_v4 = st.builds(
    lambda a, p: ipaddress.IPv4Network((a, p), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
networks_v6 = st.builds(
    lambda a, p: ipaddress.IPv6Network((a, p), strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)


def brute_force(nets: list, addr: ipaddress._BaseAddress):  # type: ignore[no-untyped-def]
    """The longest network holding addr (distinct networks of one length never both do)."""
    holding = [n for n in nets if addr in n]
    return max(holding, key=lambda n: n.prefixlen) if holding else None


@given(st.lists(networks_v4, max_size=20), st.integers(0, 2**32 - 1))
def test_matches_brute_force_v4(nets: list, addr_int: int) -> None:
    addr = ipaddress.IPv4Address(addr_int)
    nets = list(dict.fromkeys(nets))  # one owner per network
    r: Router[ipaddress.IPv4Network] = Router()
    for n in nets:
        r.add(n, n)
    assert r.lookup(addr) == brute_force(nets, addr)
    assert r.lookup_packet(v4_packet(str(addr))) == brute_force(nets, addr)


@given(st.lists(networks_v6, max_size=20), st.integers(0, 2**128 - 1))
def test_matches_brute_force_v6(nets: list, addr_int: int) -> None:
    addr = ipaddress.IPv6Address(addr_int)
    nets = list(dict.fromkeys(nets))
    r: Router[ipaddress.IPv6Network] = Router()
    for n in nets:
        r.add(n, n)
    assert r.lookup_packet(v6_packet(str(addr))) == brute_force(nets, addr)


# --- owners: one per network, each with its networks indexed --------------------------------

net = ipaddress.ip_network


def test_a_network_has_one_owner_and_giving_it_again_takes_it() -> None:
    r: Router[str] = Router()
    assert r.add(net("10.8.0.2/32"), "a") is None
    assert r.add(net("10.8.0.2/32"), "a") is None  # the same owner again: nothing taken
    assert r.add(net("10.8.0.2/32"), "b") == "a"
    assert r.owner_of(net("10.8.0.2/32")) == "b" and len(r) == 1
    assert r.networks_of("a") == () and r.networks_of("b") == (net("10.8.0.2/32"),)


def test_nested_networks_keep_their_owners_and_owner_of_is_exact() -> None:
    r: Router[str] = Router()
    r.set_networks("site", [net("10.0.0.0/8")])
    r.set_networks("office", [net("10.1.0.0/16")])
    assert r.lookup(ipaddress.ip_address("10.1.2.3")) == "office"
    assert r.lookup(ipaddress.ip_address("10.2.0.1")) == "site"
    assert r.owner_of(net("10.1.0.0/16")) == "office"
    assert r.owner_of(net("10.1.2.0/24")) is None  # inside office's, but not routed itself
    assert r.networks_of("site") == (net("10.0.0.0/8"),)


def test_set_networks_replaces_in_the_order_given_and_reports_what_it_took() -> None:
    r: Router[str] = Router()
    r.set_networks("a", [net("10.8.0.2/32"), net("fd00::2/128"), net("10.9.0.0/24")])
    r.set_networks("b", [net("10.8.0.3/32")])
    taken = r.set_networks("a", [net("10.9.0.0/24"), net("10.8.0.3/32"), net("10.9.0.0/24")])
    assert taken == {net("10.8.0.3/32"): "b"}
    assert r.networks_of("a") == (net("10.9.0.0/24"), net("10.8.0.3/32"))
    assert r.networks_of("b") == ()
    assert r.lookup(ipaddress.ip_address("10.8.0.2")) is None
    assert r.lookup(ipaddress.ip_address("fd00::2")) is None
    assert len(r) == 2
    assert r.set_networks("a", []) == {} and len(r) == 0 and r.networks_of("a") == ()


def test_remove_owner_takes_only_its_own() -> None:
    r: Router[str] = Router()
    r.add(net("10.8.0.130/32"), "session")
    r.add(net("10.8.0.130/32"), "peer")  # taken since
    assert r.remove_owner("session") == []
    assert r.owner_of(net("10.8.0.130/32")) == "peer"


@given(st.lists(st.tuples(networks_v4, st.sampled_from("abc"), st.booleans()), max_size=30))
def test_the_owner_index_agrees_with_the_table(steps: list) -> None:
    r: Router[str] = Router()
    for network, owner, add in steps:
        if add:
            r.add(network, owner)
        else:
            r.remove(network)
    for owner in "abc":
        for network in r.networks_of(owner):
            assert r.owner_of(network) == owner
    assert sum(len(r.networks_of(o)) for o in "abc") == len(r)
