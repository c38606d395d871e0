"""The front's `wg` adapter: snapshots, and `wg set` applied to a front on fakes."""

from __future__ import annotations

import errno
import ipaddress

import pytest
from support.fakes import FIRST_PORT, SERVER_PRIVATE, fake_udp, make_front

from trivpn.config import WireGuardPeerConfig
from trivpn.dataplane.wireguard.front import WireGuardFront
from trivpn.dataplane.wireguard.routes import PeerRoute
from trivpn.proto import uapi
from trivpn.proto.wireguard import crypto

net = ipaddress.ip_network


def public_key(seed: int) -> bytes:
    return crypto.public_key(crypto.clamp(bytes([seed]) * 32))


PEER_A, PEER_B, PEER_C = public_key(2), public_key(3), public_key(4)
PSK = bytes(range(32))


def req(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n\n").encode()


def alice(*allowed: str) -> WireGuardPeerConfig:
    return WireGuardPeerConfig(
        name="alice", public_key=PEER_A, allowed_ips=tuple(net(a) for a in allowed)
    )


def apply(front: WireGuardFront, *lines: str) -> None:
    parsed = uapi.parse_request(req("set=1", *lines))
    assert isinstance(parsed, uapi.Set)
    front.uapi_apply(parsed.operations)


def routed_to(front: WireGuardFront, address: str) -> bytes | None:
    owner = front.router.lookup(ipaddress.ip_address(address))
    if owner is None:
        return None
    assert isinstance(owner, PeerRoute)
    return owner.peer.public_key


def test_snapshot_of_the_front() -> None:
    front = make_front(alice("10.8.0.2/32"))
    snap = front.uapi_snapshot()
    assert snap.private_key == SERVER_PRIVATE
    assert snap.listen_port == fake_udp(front).sock.getsockname()[1] == FIRST_PORT
    (peer,) = snap.peers
    assert (peer.public_key, peer.allowed_ips, peer.endpoint) == (
        PEER_A,
        (net("10.8.0.2/32"),),
        None,
    )
    assert (peer.preshared_key, peer.rx_bytes, peer.last_handshake_time) == (None, 0, None)


def test_add_a_peer_at_runtime() -> None:
    front = make_front(alice("10.8.0.2/32"))
    apply(
        front,
        f"public_key={PEER_B.hex()}",
        f"preshared_key={PSK.hex()}",
        "endpoint=192.0.2.9:51820",
        "replace_allowed_ips=true",
        "allowed_ip=10.8.0.3/32",
    )
    assert routed_to(front, "10.8.0.3") == PEER_B
    assert routed_to(front, "10.8.0.2") == PEER_A
    peer = front.device.peers[PEER_B]
    assert (peer.endpoint, peer.preshared_key) == (("192.0.2.9", 51820), PSK)
    assert [p.public_key for p in front.uapi_snapshot().peers] == [PEER_A, PEER_B]


def test_update_only_never_creates() -> None:
    front = make_front(alice("10.8.0.2/32"))
    apply(front, f"public_key={PEER_B.hex()}", "update_only=true", "allowed_ip=10.8.0.3/32")
    assert PEER_B not in front.device.peers and routed_to(front, "10.8.0.3") is None
    apply(front, f"public_key={PEER_A.hex()}", "update_only=true", "allowed_ip=10.8.0.4/32")
    assert front.device.peers[PEER_A].allowed_ips == (net("10.8.0.2/32"), net("10.8.0.4/32"))


def test_allowed_ips_add_replace_and_move() -> None:
    front = make_front(alice("10.8.0.2/32", "10.9.0.0/24"))
    apply(front, f"public_key={PEER_A.hex()}", "allowed_ip=fd00::2/128")
    assert routed_to(front, "fd00::2") == PEER_A and routed_to(front, "10.9.0.7") == PEER_A
    apply(front, f"public_key={PEER_A.hex()}", "replace_allowed_ips=true", "allowed_ip=10.8.0.2/32")
    assert routed_to(front, "fd00::2") is None and routed_to(front, "10.9.0.7") is None
    assert len(front.router) == 1
    # A network belongs to one peer: giving it to B takes it from A.
    apply(front, f"public_key={PEER_B.hex()}", "allowed_ip=10.8.0.2/32")
    assert routed_to(front, "10.8.0.2") == PEER_B
    assert front.device.peers[PEER_A].allowed_ips == ()
    assert front.device.peers[PEER_B].allowed_ips == (net("10.8.0.2/32"),)
    assert front.routes.networks_of(front.device.peers[PEER_A]) == ()


def test_remove_and_replace_peers() -> None:
    front = make_front(alice("10.8.0.2/32"))
    apply(front, f"public_key={PEER_B.hex()}", "allowed_ip=10.8.0.3/32")
    peer_a = front.device.peers[PEER_A]
    apply(front, f"public_key={PEER_A.hex()}", "remove=true")
    assert PEER_A not in front.device.peers and peer_a.removed
    assert routed_to(front, "10.8.0.2") is None and routed_to(front, "10.8.0.3") == PEER_B
    apply(front, f"public_key={PEER_C.hex()}", "remove=true")  # unknown: nothing to do
    apply(front, "replace_peers=true", f"public_key={PEER_C.hex()}", "allowed_ip=10.8.0.4/32")
    assert list(front.device.peers) == [PEER_C] and len(front.router) == 1


def test_the_values_the_device_has_are_accepted_and_a_zero_key_refused() -> None:
    front = make_front(alice("10.8.0.2/32"))
    port = front.listen_port
    # The values the device already has are accepted (wg syncconf sends them).
    apply(front, f"private_key={SERVER_PRIVATE.hex()}", f"listen_port={port}", "fwmark=0")
    apply(front, "listen_port=0")  # "any port": the current one will do
    assert front.listen_port == port
    # An all-zero key would clamp to one everybody knows (tests/wireguard/
    # test_front_interface_settings.py changes port, key and mark for real).
    with pytest.raises(uapi.UapiError) as info:
        apply(front, "replace_peers=true", f"private_key={'00' * 32}", f"public_key={PEER_B.hex()}")
    assert info.value.errno == errno.EOPNOTSUPP
    assert list(front.device.peers) == [PEER_A]  # nothing applied
    assert len(front.router) == 1


def test_own_key_is_ignored_and_a_low_order_key_refused() -> None:
    front = make_front()
    apply(front, f"public_key={public_key(1).hex()}", "allowed_ip=10.8.0.9/32")
    assert not front.device.peers and len(front.router) == 0
    with pytest.raises(uapi.UapiError) as info:
        apply(front, f"public_key={'00' * 32}", "allowed_ip=10.8.0.9/32")
    assert info.value.errno == errno.EINVAL and not front.device.peers


class ToyVpnSession:
    """A route owner of another protocol (trivpn.dataplane.toyvpn.SessionRoute's shape)."""

    def __repr__(self) -> str:
        return "ToyVPN session 10.8.0.130"

    def send(self, packets: list[bytes], now: float) -> None: ...


def test_a_network_routed_to_toyvpn_is_refused() -> None:
    front = make_front()
    session = ToyVpnSession()
    front.router.add(net("10.8.0.130/32"), session)
    with pytest.raises(uapi.UapiError) as info:
        apply(front, f"public_key={PEER_B.hex()}", "allowed_ip=10.8.0.130/32")
    assert info.value.errno == errno.EADDRINUSE and not front.device.peers
    assert str(info.value) == "10.8.0.130/32 is routed to ToyVPN session 10.8.0.130"
    assert front.router.lookup(ipaddress.ip_address("10.8.0.130")) is session


def test_preshared_key_change_is_made_in_place() -> None:
    front = make_front(alice("10.8.0.2/32"))
    peer = front.device.peers[PEER_A]
    peer.rx_bytes, peer.tx_bytes, peer.last_handshake_time = 10, 20, 1700000000.0
    apply(front, f"public_key={PEER_A.hex()}", "endpoint=192.0.2.1:1")
    apply(front, f"public_key={PEER_A.hex()}", f"preshared_key={PSK.hex()}")
    assert front.device.peers[PEER_A] is peer and not peer.removed
    assert (peer.preshared_key, peer.config.preshared_key) == (PSK, PSK)
    assert (peer.rx_bytes, peer.tx_bytes, peer.last_handshake_time) == (10, 20, 1700000000.0)
    assert (peer.name, peer.endpoint, peer.allowed_ips) == (
        "alice",
        ("192.0.2.1", 1),
        (net("10.8.0.2/32"),),
    )
    assert routed_to(front, "10.8.0.2") == PEER_A
    assert front.uapi_snapshot().peers[0].preshared_key == PSK
    apply(front, f"public_key={PEER_A.hex()}", f"preshared_key={'00' * 32}")
    assert front.device.peers[PEER_A] is peer and peer.preshared_key is None


def test_persistent_keepalive_on_sends_at_once_off_stops() -> None:
    front = make_front(alice("10.8.0.2/32"))
    peer = front.device.peers[PEER_A]
    assert peer.next_deadline() is None
    apply(front, f"public_key={PEER_A.hex()}", "persistent_keepalive_interval=25")
    assert peer.persistent_keepalive == 25 and peer.next_deadline() == float("-inf")
    apply(front, f"public_key={PEER_A.hex()}", "persistent_keepalive_interval=0")
    assert peer.persistent_keepalive is None and peer.next_deadline() is None
    assert front.uapi_snapshot().peers[0].persistent_keepalive is None


def test_route_and_endpoint_changes_are_reported_for_the_kernel_routes() -> None:
    front = make_front(alice("10.8.0.2/32"))
    calls: list[frozenset[ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
    front.on_routes_change = lambda: calls.append(front.routed_networks())
    apply(front, f"public_key={PEER_A.hex()}", "allowed_ip=192.168.50.0/24")
    assert calls[-1] == {net("10.8.0.2/32"), net("192.168.50.0/24")}
    reported = len(calls)
    apply(front, f"public_key={PEER_A.hex()}", "endpoint=198.51.100.7:4000")
    assert len(calls) > reported  # the endpoint may now lie in a routed network
    assert front.peer_endpoints() == {ipaddress.ip_address("198.51.100.7")}
    reported = len(calls)
    apply(front, f"public_key={PEER_A.hex()}", "endpoint=198.51.100.7:4000")  # as it is
    assert len(calls) == reported
