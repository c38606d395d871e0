"""`wg set` private-key, listen-port and fwmark on a running WireGuard front.

The front listens on a real loopback UDP socket; its client is a sans-IO Device behind another
loopback socket. A wait for what the other end received polls that condition in 1 ms steps
under a bound (trio.fail_after); no test waits for time to pass.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import random
import socket
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import trio
import trio.testing
from support.fakes import fake_tun, make_front
from support.wg_harness import A_TUN, B_TUN, ip4

from trivpn.config import Endpoint, WireGuardPeerConfig
from trivpn.dataplane.wireguard.front import WireGuardFront
from trivpn.net import udp
from trivpn.proto import uapi
from trivpn.proto.wireguard import Device, Output, Peer, PeerConfig, crypto, encode_key
from trivpn.proto.wireguard.timers import HANDSHAKE_INITIATION_RATE

LOOPBACK = "127.0.0.1"
BOUND = 5.0  # s: a bound on every wait, never reached when things work


def key(seed: int) -> bytes:
    return crypto.clamp(random.Random(seed).randbytes(32))


SERVER_KEY, CLIENT_KEY, NEW_SERVER_KEY = key(1), key(2), key(3)


def apply(front: WireGuardFront, *lines: str) -> None:
    parsed = uapi.parse_request("\n".join(("set=1", *lines, "", "")).encode())
    assert isinstance(parsed, uapi.Set)
    front.uapi_apply(parsed.operations)


def refused(front: WireGuardFront, *lines: str) -> int:
    with pytest.raises(uapi.UapiError) as info:
        apply(front, *lines)
    return info.value.errno


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def listener() -> Iterator[udp.DatagramSocket]:
    sock = udp.open_listener(Endpoint(LOOPBACK, 0))
    yield sock
    sock.close()


def front_on(sock: udp.DatagramSocket, *peers: WireGuardPeerConfig) -> WireGuardFront:
    return make_front(*peers, sock=sock, private_key=SERVER_KEY)


def client_peer_config(seed: int = 2, network: str = f"{A_TUN}/32") -> WireGuardPeerConfig:
    return WireGuardPeerConfig(
        name=f"client{seed}",
        public_key=crypto.public_key(key(seed)),
        allowed_ips=(ipaddress.ip_network(network),),
    )


# --- listen-port --------------------------------------------------------------------------


async def test_listen_port_moves_the_socket_and_zero_or_the_same_port_keep_it(
    listener: udp.DatagramSocket,
) -> None:
    front = front_on(listener, client_peer_config())
    first = front.listen_port
    apply(front, "listen_port=0")
    apply(front, f"listen_port={first}")
    assert front.listen_port == first
    old = listener.sock

    port = free_port()
    apply(front, f"listen_port={port}")
    assert front.listen_port == port == front.uapi_snapshot().listen_port
    assert front.sock is listener and listener.sock is not old
    assert old.fileno() == -1  # the old socket is closed: its port is free again
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind((LOOPBACK, first))
    assert listener.sock.getsockname()[0] == LOOPBACK  # the same address, a new port
    assert front.device.peers  # peers stay


def test_a_port_in_use_is_refused_and_nothing_changes(listener: udp.DatagramSocket) -> None:
    front = front_on(listener, client_peer_config())
    public_key = front.public_key
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind((LOOPBACK, 0))
        taken = blocker.getsockname()[1]
        before = (front.listen_port, listener.sock)
        code = refused(
            front,
            f"private_key={NEW_SERVER_KEY.hex()}",
            f"listen_port={taken}",
            "replace_peers=true",
        )
        assert code == errno.EADDRINUSE
        assert (front.listen_port, listener.sock) == before
        assert front.public_key == public_key and len(front.device.peers) == 1


async def test_a_waiting_receiver_moves_to_the_new_socket(listener: udp.DatagramSocket) -> None:
    got: list[bytes] = []

    async def receive_one() -> None:
        await listener.wait_readable()
        got.extend(data for data, _ in listener.drain())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_one)
        await trio.testing.wait_all_tasks_blocked()  # it waits on the first socket
        listener.rebind(0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"to the new port", listener.sock.getsockname())
        with trio.fail_after(BOUND):
            while not got:
                await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(0)
    assert got == [b"to the new port"]


async def test_a_closed_socket_still_ends_the_wait(listener: udp.DatagramSocket) -> None:
    async def wait() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await listener.wait_readable()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.notify_closing(listener.sock)
        listener.close()


# --- a session across a new port and a new key ----------------------------------------------


class Client:
    """A sans-IO client device behind a loopback socket, peer of the front."""

    def __init__(self, front: WireGuardFront) -> None:
        self.front = front
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.setblocking(False)
        # TAI64N stamps from trio's clock, so that a clock jump makes a fresh one
        self.device = Device(
            CLIENT_KEY, mtu=1420, rng=os.urandom, wallclock=lambda: 1.7e9 + trio.current_time()
        )
        self.peer = self._add_server(front.device.public_key, front.listen_port)
        self.packets: list[bytes] = []
        self.sources: list[tuple[str, int]] = []  # where the server's datagrams came from

    def _add_server(self, public_key: bytes, port: int) -> Peer:
        return self.device.add_peer(
            PeerConfig(
                public_key=public_key,
                allowed_ips=(ipaddress.ip_network("0.0.0.0/0"),),
                endpoint=(LOOPBACK, port),
            )
        )

    def use_server(self, public_key: bytes, port: int) -> None:
        """`wg set … peer <old> remove; wg set … peer <new> endpoint …`."""
        self.device.remove_peer(self.peer.public_key)
        self.peer = self._add_server(public_key, port)

    def _transmit(self, out: Output) -> None:
        for data, addr in out.datagrams:
            self.sock.sendto(data, addr)
        self.packets.extend(out.packets)

    def send(self, packet: bytes) -> None:
        self._transmit(self.device.send(self.peer, packet, trio.current_time()))

    async def receive(self, done: Callable[[], bool]) -> None:
        """Feed the device what arrives until ``done()``."""
        with trio.fail_after(BOUND):
            while not done():
                await trio.lowlevel.wait_readable(self.sock)
                data, addr = self.sock.recvfrom(65535)
                self.sources.append(addr)
                self._transmit(self.device.receive(data, addr, trio.current_time()))

    async def connect(self, payload: bytes = b"one") -> None:
        """A packet through a new session: the handshake, then the packet reaches the TUN."""
        self.send(ip4(A_TUN, B_TUN, payload))
        await self.receive(lambda: self.peer.current is not None)
        await tun_receives(self.front, ip4(A_TUN, B_TUN, payload))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def running(listener: udp.DatagramSocket) -> AsyncIterator[tuple[WireGuardFront, Client]]:
    front = front_on(listener, client_peer_config())
    client = Client(front)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(front.receive_loop)
            yield front, client
            nursery.cancel_scope.cancel()
    finally:
        client.close()


async def tun_receives(front: WireGuardFront, packet: bytes) -> None:
    tun = fake_tun(front)
    with trio.fail_after(BOUND):
        while packet not in tun.written:
            await trio.sleep(0.001)


def reply(front: WireGuardFront, packet: bytes) -> None:
    owner = front.router.lookup(ipaddress.ip_address(A_TUN))
    assert owner is not None
    owner.send([packet], trio.current_time())


async def test_a_session_survives_a_new_listen_port(
    running: tuple[WireGuardFront, Client],
) -> None:
    front, client = running
    await client.connect()
    handshakes = front.device.peers[client.device.public_key].handshakes

    port = free_port()
    apply(front, f"listen_port={port}")
    # The server's next packet leaves from the new port, and the client roams to it.
    reply(front, ip4(B_TUN, A_TUN, b"from the new port"))
    await client.receive(lambda: len(client.packets) == 1)
    assert client.sources[-1] == (LOOPBACK, port)
    assert client.peer.endpoint == (LOOPBACK, port)
    client.send(ip4(A_TUN, B_TUN, b"two"))
    await tun_receives(front, ip4(A_TUN, B_TUN, b"two"))
    assert front.device.peers[client.device.public_key].handshakes == handshakes  # same session
    assert front.counters["wireguard_receive_error"] == 0


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Real time, plus jumps: the handshake after a key change must come 20 ms after the last
    (HANDSHAKE_INITIATION_RATE), and the test jumps over that instead of sleeping."""
    return trio.testing.MockClock(rate=1.0)


async def test_a_new_private_key_needs_the_clients_to_learn_it(
    running: tuple[WireGuardFront, Client],
    caplog: pytest.LogCaptureFixture,
    clock: trio.testing.MockClock,
) -> None:
    front, client = running
    caplog.set_level(logging.INFO, logger="trivpn")
    await client.connect()

    apply(front, f"private_key={NEW_SERVER_KEY.hex()}")
    new_public = crypto.public_key(NEW_SERVER_KEY)
    assert front.device.public_key == new_public and front.public_key == encode_key(new_public)
    assert front.uapi_snapshot().private_key == NEW_SERVER_KEY
    assert f"private key changed, new public key {encode_key(new_public)}" in caplog.text
    for secret in (NEW_SERVER_KEY, SERVER_KEY):
        assert secret.hex() not in caplog.text and encode_key(secret) not in caplog.text

    # The old session does not decrypt any more.
    client.send(ip4(A_TUN, B_TUN, b"lost"))
    with trio.fail_after(BOUND):
        while not front.device.counters["unknown_index"]:
            await trio.sleep(0.001)
    assert fake_tun(front).written == [ip4(A_TUN, B_TUN, b"one")]

    client.use_server(new_public, front.listen_port)
    clock.jump(HANDSHAKE_INITIATION_RATE * 2)
    await client.connect(b"two")
    reply(front, ip4(B_TUN, A_TUN, b"back"))
    await client.receive(lambda: len(client.packets) == 1)
    assert client.packets == [ip4(B_TUN, A_TUN, b"back")]


def test_a_peer_with_the_new_own_key_is_removed_with_its_routes(
    listener: udp.DatagramSocket,
) -> None:
    front = front_on(listener, client_peer_config(2), client_peer_config(4, "10.0.0.4/32"))
    apply(front, f"private_key={key(2).hex()}")
    assert list(front.device.peers) == [crypto.public_key(key(4))]
    assert front.router.lookup(ipaddress.ip_address(A_TUN)) is None
    assert front.router.lookup(ipaddress.ip_address("10.0.0.4")) is not None
    assert len(front.router) == 1


def test_the_same_key_changes_nothing_and_removing_the_key_is_refused(
    listener: udp.DatagramSocket,
) -> None:
    front = front_on(listener, client_peer_config())
    peer = front.device.peers[crypto.public_key(CLIENT_KEY)]
    apply(front, f"private_key={SERVER_KEY.hex()}")
    assert front.device.peers[peer.public_key] is peer
    assert refused(front, f"private_key={'00' * 32}") == errno.EOPNOTSUPP
    assert front.device.identity.private_key == SERVER_KEY


# --- fwmark -------------------------------------------------------------------------------


def mark_of(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_MARK)


@pytest.mark.root  # SO_MARK needs CAP_NET_ADMIN
async def test_fwmark_is_set_shown_kept_across_a_new_port_and_cleared(
    listener: udp.DatagramSocket,
) -> None:
    front = front_on(listener)
    assert front.fwmark == 0 == front.uapi_snapshot().fwmark
    apply(front, f"fwmark={0x1234}")
    assert mark_of(listener.sock) == 0x1234 == front.uapi_snapshot().fwmark
    apply(front, f"listen_port={free_port()}")
    assert mark_of(listener.sock) == 0x1234
    apply(front, "fwmark=0")
    assert mark_of(listener.sock) == 0 == front.fwmark
