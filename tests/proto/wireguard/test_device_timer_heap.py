"""Device timers kept in a heap: due peers run on time and in order, others are not looked at."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterator
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.wg_harness import ip4

from trivpn.proto.wireguard import Device, Output, Peer, PeerConfig
from trivpn.proto.wireguard.messages import MSG_TRANSPORT

SERVER_ADDR = ("198.51.100.1", 51820)
SERVER_TUN = "10.0.0.1"
WALL_EPOCH = 1_700_000_000.0


def client_addr(i: int) -> tuple[str, int]:
    return (f"203.0.113.{i % 200 + 1}", 40000 + i // 200)


def client_tun(i: int) -> str:
    return str(ipaddress.IPv4Address(0x0A000100 + i))  # 10.0.1.0 + i


class World:
    """A server Device and one client Device per server peer, sharing a seeded rng and a
    virtual clock. ``tick`` is how every device's timers run: Device.tick, or the reference
    walk below, so two worlds built alike differ in that only."""

    def __init__(
        self,
        keepalives: list[int | None],
        *,
        seed: int = 1,
        known_endpoints: bool = True,
        tick: Callable[[Device, float, Output], None] | None = None,
    ) -> None:
        rnd = random.Random(seed)
        self.now = 0.0
        self.tick = tick or heap_tick
        self.server = Device(
            rnd.randbytes(32), rng=rnd.randbytes, wallclock=self.wallclock, under_load_rate=1e9
        )
        self.peers: list[Peer] = []
        self.clients: list[tuple[Device, Peer]] = []
        for i, keepalive in enumerate(keepalives):
            client = Device(rnd.randbytes(32), rng=rnd.randbytes, wallclock=self.wallclock)
            self.peers.append(
                self.server.add_peer(
                    PeerConfig(
                        public_key=client.public_key,
                        allowed_ips=(ipaddress.ip_network(f"{client_tun(i)}/32"),),
                        endpoint=client_addr(i) if known_endpoints else None,
                        persistent_keepalive=keepalive,
                        name=f"p{i}",
                    )
                )
            )
            to_server = client.add_peer(
                PeerConfig(
                    public_key=self.server.public_key,
                    allowed_ips=(ipaddress.ip_network("0.0.0.0/0"),),
                    endpoint=SERVER_ADDR,
                    name="server",
                )
            )
            self.clients.append((client, to_server))
        self.by_addr = {client_addr(i): i for i in range(len(keepalives))}

    def wallclock(self) -> float:
        return WALL_EPOCH + self.now

    def handshake(self, i: int) -> None:
        """Client i initiates; an empty packet confirms the session (no data, no reply timer)."""
        client, to_server = self.clients[i]
        ((initiation, _),) = client.send(to_server, b"", self.now).datagrams
        ((response, _),) = self.server.receive(initiation, client_addr(i), self.now).datagrams
        ((confirm, _),) = client.receive(response, SERVER_ADDR, self.now).datagrams
        out = self.server.receive(confirm, client_addr(i), self.now)
        assert self.peers[i].current is not None and not out.datagrams

    def client_keepalive(self, i: int) -> Output:
        """Client i sends an empty packet on its session; the server receives it."""
        client, to_server = self.clients[i]
        ((datagram, _),) = client.send(to_server, b"", self.now).datagrams
        return self.server.receive(datagram, client_addr(i), self.now)


def heap_tick(device: Device, now: float, out: Output) -> None:
    device.tick(now, out)


def walk_tick(device: Device, now: float, out: Output) -> None:
    """The reference: the former Device.tick, a walk over every peer in the order added."""
    for peer in list(device.peers.values()):
        deadline = peer.next_deadline()
        if deadline is not None and deadline <= now:
            peer.tick(now, out)


def walk_deadline(device: Device) -> float | None:
    deadlines = [d for p in device.peers.values() if (d := p.next_deadline()) is not None]
    return min(deadlines) if deadlines else None


@pytest.fixture
def ticked(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, str]]:
    """(now, peer name) of every Peer.tick call."""
    calls: list[tuple[float, str]] = []
    original = Peer.tick

    def counting(self: Peer, now: float, out: Output) -> None:
        calls.append((now, self.name))
        original(self, now, out)

    monkeypatch.setattr(Peer, "tick", counting)
    return calls


def run_until(world: World, end: float) -> Iterator[tuple[float, list[int]]]:
    """Tick at each next_deadline up to ``end``: (when, indices of the clients sent to)."""
    while (deadline := world.server.next_deadline()) is not None and deadline <= end:
        world.now = deadline
        out = world.server.tick(deadline)
        yield deadline, [world.by_addr[addr] for _, addr in out.datagrams]


def test_many_keepalives_fire_exactly_when_due_and_in_order(
    ticked: list[tuple[float, str]],
) -> None:
    rnd = random.Random(7)
    keepalives = [rnd.randint(2, 30) for _ in range(40)] + [5, 5]  # two share every deadline
    world = World(list(keepalives))
    for i in range(len(keepalives)):
        world.handshake(i)  # all at t=0: keepalives at k, 2k, 3k...
    end = 100.0  # before the sessions grow old enough for a new handshake
    expected = sorted(
        (float(m * k), i) for i, k in enumerate(keepalives) for m in range(1, int(end // k) + 1)
    )
    fired = [(when, i) for when, sent in run_until(world, end) for i in sent]
    assert fired == expected  # each on time, ties in the order the peers were added
    assert all(name == f"p{i}" for (_, name), (_, i) in zip(ticked, expected, strict=True))
    assert world.server.next_deadline() == min((int(end // k) + 1) * k for k in keepalives)


def test_a_deadline_moved_later_by_traffic_runs_no_early_work(
    ticked: list[tuple[float, str]],
) -> None:
    world = World([25, 30])
    world.handshake(0)
    world.handshake(1)
    assert world.server.next_deadline() == 25.0
    world.now = 20.0
    world.client_keepalive(0)  # p0's keepalive moves to 45; its entry at 25 is stale
    out = world.server.tick(25.0)  # a caller that slept until the old deadline
    assert out.is_empty() and ticked == []
    assert world.server.next_deadline() == 30.0
    out = world.server.tick(30.0)
    assert ticked == [(30.0, "p1")] and [addr for _, addr in out.datagrams] == [client_addr(1)]
    assert world.server.next_deadline() == 45.0


def test_a_timer_made_due_after_next_deadline_fires_on_that_tick() -> None:
    world = World([25, None])
    world.handshake(0)
    world.handshake(1)
    assert world.server.next_deadline() == 25.0
    world.server.set_persistent_keepalive(world.peers[1], 10)  # due now, as in wg(8)
    out = world.server.tick(3.0)  # no next_deadline() in between: tick flushes first
    assert [(data[0], addr) for data, addr in out.datagrams] == [(MSG_TRANSPORT, client_addr(1))]
    assert world.server.next_deadline() == 13.0


def test_a_removed_peer_never_ticks(ticked: list[tuple[float, str]]) -> None:
    world = World([5, 7, 5])
    for i in range(3):
        world.handshake(i)
    world.server.next_deadline()  # its entries are in the heap...
    world.server.remove_peer(world.peers[1].public_key)  # ...and stale from now on
    # Turned off and on again, a removed peer's keepalive would be due now: never run.
    world.server.set_persistent_keepalive(world.peers[1], 0)
    world.server.set_persistent_keepalive(world.peers[1], 3)
    sent = {i for _, indices in run_until(world, 100.0) for i in indices}
    assert sent == {0, 2}
    assert {name for _, name in ticked} == {"p0", "p2"}
    world.server.remove_peer(world.peers[0].public_key)
    world.server.remove_peer(world.peers[2].public_key)
    assert world.server.next_deadline() is None
    assert world.server.tick(1000.0).is_empty()


def test_the_heap_stays_bounded_under_one_busy_peer() -> None:
    world = World([25] * 50)
    for i in range(50):
        world.handshake(i)
    device = world.server
    largest = 0
    for n in range(10_000):
        world.now = 1.0 + n / 1024
        world.client_keepalive(7)  # every packet moves p7's keepalive a little later
        assert device.next_deadline() == 25.0  # the others are due first
        largest = max(largest, len(device._heap))
    assert largest <= 2 * 50 + 64 + 1  # rebuilt from the schedule, not 10 000 stale entries
    last_packet = world.now
    fired = [i for when, sent in run_until(world, 25.0) for i in sent]
    assert sorted(fired) == [i for i in range(50) if i != 7]
    assert device.next_deadline() == last_packet + 25.0


# Repeats weigh the draw: deliveries complete handshakes, removals end the interesting part.
KINDS = ("server_send", "server_send", "client_send", "client_send", "deliver", "deliver",
         "deliver", "lose", "advance", "advance", "tick", "to_deadline", "to_deadline",
         "keepalive", "remove")  # fmt: skip
ADVANCES = (0.25, 3.0, 10.0, 26.0, 61.0)
KEEPALIVES = (0, 4, 25)
# (kind, peer index, a choice: how far to advance, which keepalive)
OPS = st.tuples(st.sampled_from(KINDS), st.integers(0, 3), st.integers(0, 4))


class Run:
    """One world driven by a list of ops; records what the server did after each."""

    def __init__(self, tick: Callable[[Device, float, Output], None]) -> None:
        self.world = World([None, 25, 7, None], seed=3, known_endpoints=False, tick=tick)
        self.world.peers[0].endpoint = client_addr(0)  # the server can initiate to one client
        self.world.handshake(1)
        self.world.handshake(2)
        self.to_server: list[tuple[bytes, int]] = []
        self.to_clients: list[tuple[bytes, int]] = []
        self.log: list[object] = []

    def _server_out(self, out: Output) -> None:
        for data, addr in out.datagrams:
            if addr in self.world.by_addr:
                self.to_clients.append((data, self.world.by_addr[addr]))
        events = [(type(e).__name__, e.peer.name) for e in out.events]
        self.log.append((out.datagrams, out.packets, events))

    def _client_out(self, i: int, out: Output) -> None:
        self.to_server.extend((data, i) for data, _ in out.datagrams)

    def step(self, op: tuple[str, int, int], deadline: Callable[[Device], float | None]) -> None:
        world, server = self.world, self.world.server
        kind, i, choice = op
        peer = world.peers[i]
        if kind == "server_send":
            self._server_out(server.send(peer, ip4(SERVER_TUN, client_tun(i)), world.now))
        elif kind == "client_send":
            client, to_server = world.clients[i]
            self._client_out(i, client.send(to_server, ip4(client_tun(i), SERVER_TUN), world.now))
        elif kind in ("deliver", "lose"):
            for_server, self.to_server = self.to_server, []
            for_clients, self.to_clients = self.to_clients, []
            if kind == "deliver":
                for data, j in for_server:
                    self._server_out(server.receive(data, client_addr(j), world.now))
                for data, j in for_clients:
                    client, _ = world.clients[j]
                    self._client_out(j, client.receive(data, SERVER_ADDR, world.now))
        elif kind == "advance":
            world.now += ADVANCES[choice]
        elif kind in ("tick", "to_deadline"):
            due = deadline(server)
            if kind == "to_deadline" and due is not None and world.now < due < world.now + 200:
                world.now = due
            out = Output()
            world.tick(server, world.now, out)
            self._server_out(out)
            for j, (client, _) in enumerate(world.clients):
                client_out = Output()
                world.tick(client, world.now, client_out)
                self._client_out(j, client_out)
        elif kind == "keepalive":
            server.set_persistent_keepalive(peer, KEEPALIVES[choice % len(KEEPALIVES)])
        elif kind == "remove" and not peer.removed:
            server.remove_peer(peer.public_key)
        self.log.append((deadline(server), dict(server.counters)))


@settings(max_examples=80, deadline=None)
@given(st.lists(OPS, max_size=40))
def test_same_output_as_a_walk_over_every_peer(ops: list[tuple[str, int, int]]) -> None:
    calls: list[tuple[str, float]] = []
    original = Peer.tick

    def recording(self: Peer, now: float, out: Output) -> None:
        calls.append((self.name, now))
        original(self, now, out)

    heap, walk = Run(heap_tick), Run(walk_tick)
    with mock.patch.object(Peer, "tick", recording):
        for op in ops:
            heap.step(op, Device.next_deadline)
            heap_calls = calls[:]
            calls.clear()
            walk.step(op, walk_deadline)
            assert heap.log == walk.log  # the same bytes, events, counters and exact deadline
            assert heap_calls == calls  # and the same peers ticked: none early, none late
            calls.clear()
