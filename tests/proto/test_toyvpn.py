"""ToyVPN protocol logic: sans-IO with explicit ``now``, and its timers under trio's MockClock."""

import ipaddress

import pytest
import trio
import trio.testing

from trivpn.dataplane.toyvpn import run_timers as run_toyvpn_timers
from trivpn.proto import toyvpn

SECRET = b"s3cret-toy"
POOL = ipaddress.IPv4Network("10.8.0.128/30")  # two usable hosts: .129, .130
A = ("198.51.100.2", 40000)
B = ("198.51.100.3", 40001)
C = ("198.51.100.4", 40002)


def make_server(**kw: object) -> toyvpn.ToyVpnServer:
    args: dict[str, object] = dict(
        secret=SECRET,
        pool=POOL,
        mtu=1400,
        dns=[ipaddress.ip_address("192.0.2.53")],
        routes=[ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("fd00::/8")],
        search_domain="lab.example",
        keepalive=15.0,
        idle_timeout=60.0,
    )
    args.update(kw)
    return toyvpn.ToyVpnServer(**args)  # type: ignore[arg-type]


def ipv4_packet(src: str, dst: str = "203.0.113.2", payload: bytes = b"hi") -> bytes:
    total = 20 + len(payload)
    header = bytes([0x45, 0, total >> 8, total & 0xFF]) + bytes(8)
    return header + ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + payload


def connect(server: toyvpn.ToyVpnServer, addr: tuple[str, int], now: float = 0.0) -> toyvpn.Session:
    result = server.receive(b"\x00" + SECRET, addr, now)
    assert isinstance(result, toyvpn.Handshake)
    return result.session


def test_handshake_replies_with_parameters_three_times_padded_to_1024() -> None:
    server = make_server()
    result = server.receive(b"\x00" + SECRET, A, 0.0)
    assert isinstance(result, toyvpn.Handshake) and result.new
    assert len(result.replies) == 3
    reply = result.replies[0]
    assert len(reply) == 1024 and reply[0] == 0
    assert reply[1:].rstrip(b" ") == (
        b" m,1400 a,10.8.0.129,32 d,192.0.2.53 r,0.0.0.0,0 r,fd00::,8 s,lab.example"
    )
    params = toyvpn.Parameters.decode(reply)
    assert params.address == ipaddress.IPv4Address("10.8.0.129")
    assert params.mtu == 1400
    assert params.routes == (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("fd00::/8"))


def test_new_client_parameters_reach_new_sessions_and_keep_the_mtu() -> None:
    server = make_server()
    connect(server, A)
    server.set_client_parameters([ipaddress.ip_address("192.0.2.54")], [], "")
    result = server.receive(b"\x00" + SECRET, B, 1.0)
    assert isinstance(result, toyvpn.Handshake) and result.new
    assert result.replies[0][1:].rstrip(b" ") == b" m,1400 a,10.8.0.130,32 d,192.0.2.54"


def test_parameters_without_search_domain_have_no_s_field() -> None:
    reply = connect_reply = make_server(search_domain="").receive(b"\x00" + SECRET, A, 0.0)
    assert isinstance(connect_reply, toyvpn.Handshake)
    assert b" s," not in reply.replies[0]  # type: ignore[union-attr]


def test_repeated_handshake_keeps_session_and_address() -> None:
    server = make_server()
    first = connect(server, A)
    again = server.receive(b"\x00" + SECRET, A, 5.0)
    assert isinstance(again, toyvpn.Handshake)
    assert not again.new and again.session is first
    assert len(server.sessions) == 1 and server.pool.in_use == 1


def test_clients_get_distinct_addresses_and_full_pool_refuses_silently() -> None:
    server = make_server()
    a, b = connect(server, A), connect(server, B)
    assert {a.address, b.address} == {
        ipaddress.IPv4Address("10.8.0.129"),
        ipaddress.IPv4Address("10.8.0.130"),
    }
    assert server.receive(b"\x00" + SECRET, C, 0.0) == toyvpn.Refused("pool_full")
    assert server.counters["pool_full"] == 1 and C not in server.sessions


def test_reserved_addresses_are_never_handed_out() -> None:
    server = make_server(reserved=[ipaddress.ip_address("10.8.0.129")])
    assert connect(server, A).address == ipaddress.IPv4Address("10.8.0.130")


def test_wrong_secret_is_silent_and_counted() -> None:
    server = make_server()
    for bad in (b"\x00wrong", b"\x00" + SECRET + b"x", b"\x00" + SECRET[:-1]):
        assert server.receive(bad, A, 0.0) == toyvpn.Refused("bad_secret")
    assert server.counters["bad_secret"] == 3
    assert not server.sessions


def test_data_from_session_goes_to_tun_and_refreshes_receive_time() -> None:
    server = make_server()
    session = connect(server, A)
    packet = ipv4_packet(str(session.address))
    assert server.receive(packet, A, 7.0) == packet
    assert session.last_recv == 7.0 and session.rx_packets == 1


def test_spoofed_source_is_dropped() -> None:
    server = make_server()
    a, b = connect(server, A), connect(server, B)
    for src in (str(b.address), "10.8.0.1", "192.0.2.9"):  # another client, the server, outside
        assert server.receive(ipv4_packet(src), A, 1.0) == toyvpn.Refused("spoofed_source")
    ipv6 = bytes([0x60]) + bytes(39)
    assert server.receive(ipv6, A, 1.0) == toyvpn.Refused("not_ipv4")  # ToyVPN carries IPv4
    assert server.receive(b"\x45\x00", A, 1.0) == toyvpn.Refused("spoofed_source")  # truncated
    assert (server.counters["spoofed_source"], server.counters["not_ipv4"]) == (4, 1)
    assert a.last_recv == 0.0  # dropped packets do not keep a session alive


def test_data_from_unknown_endpoint_is_dropped() -> None:
    server = make_server()
    assert server.receive(ipv4_packet("10.8.0.129"), A, 0.0) == toyvpn.Refused("unknown_endpoint")


def test_control_message_refreshes_session() -> None:
    server = make_server()
    session = connect(server, A)
    assert server.receive(toyvpn.KEEPALIVE, A, 9.0) is None
    assert session.last_recv == 9.0
    assert server.receive(b"", A, 9.0) == toyvpn.Refused("malformed")


async def test_keepalive_at_exactly_the_interval_then_expiry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = make_server(keepalive=15.0, idle_timeout=60.0)
    start = trio.current_time()
    session = connect(server, A, now=start)
    sent: list[float] = []
    await run_toyvpn_timers(server, session, lambda: sent.append(trio.current_time() - start))
    assert sent == [15.0, 30.0, 45.0]  # silent server: one keepalive every 15 s
    assert trio.current_time() - start == 60.0  # nothing received for idle_timeout
    assert session.closed and A not in server.sessions and server.pool.in_use == 0


async def test_traffic_postpones_keepalive_and_expiry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = make_server(keepalive=15.0, idle_timeout=60.0)
    start = trio.current_time()
    session = connect(server, A, now=start)
    sent: list[float] = []

    async def client_traffic() -> None:
        await trio.sleep(10)
        session.encapsulate(b"\x45" + bytes(19), trio.current_time())  # we sent at t=10
        await trio.sleep(40)
        server.receive(toyvpn.KEEPALIVE, A, trio.current_time())  # client spoke at t=50

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_traffic)
        await run_toyvpn_timers(server, session, lambda: sent.append(trio.current_time() - start))
    assert sent == [25.0, 40.0, 55.0, 70.0, 85.0, 100.0]
    assert trio.current_time() - start == 110.0


async def test_expired_address_is_reused(autojump_clock: trio.testing.MockClock) -> None:
    server = make_server(pool=ipaddress.IPv4Network("10.8.0.128/31"))  # a /31: two addresses
    first = connect(server, A, now=trio.current_time())
    second = connect(server, B, now=trio.current_time())
    assert server.receive(b"\x00" + SECRET, C, trio.current_time()) == toyvpn.Refused("pool_full")
    await run_toyvpn_timers(server, first, lambda: None)
    third = connect(server, C, now=trio.current_time())
    assert third.address == first.address != second.address


@pytest.mark.parametrize(
    "datagram",
    [
        b"\x01abc",
        b"\x00",
        b"\x00 m,abc a,10.0.0.2,32",
        b"\x00 m,1400",
        b"\x00 a,10.0.0.2,32",
        b"\x00 m,1400 a,300.0.0.1,32",
        b"\x00 m,10 a,10.0.0.2,32",
        b"\x00 m,1400 a,1.2.3.4,32 r,x,1",
        b"\x00\xff\xfe",
    ],
)
def test_client_rejects_malformed_parameters(datagram: bytes) -> None:
    client = toyvpn.ToyVpnClient(SECRET)
    client.handshake(0.0)
    assert client.receive(datagram, 1.0) is None
    assert client.parameters is None


def test_client_handshake_and_data() -> None:
    server = make_server()
    client = toyvpn.ToyVpnClient(SECRET, keepalive=15.0, quiet_timeout=60.0)
    hello = client.handshake(0.0)
    assert hello == [b"\x00" + SECRET] * 3
    packet = ipv4_packet("10.8.0.129")
    assert client.receive(packet, 0.5) is None  # data before the parameters is ignored
    result = server.receive(hello[0], A, 0.0)
    assert isinstance(result, toyvpn.Handshake)
    params = client.receive(result.replies[0], 1.0)
    assert isinstance(params, toyvpn.Parameters) and params.address == result.session.address
    assert client.receive(result.replies[1], 1.0) is None  # the duplicate copies are ignored
    assert client.receive(packet, 2.0) == packet
    assert client.tick(16.9) == toyvpn.TICK_KEEPALIVE  # last sent at 0 (the handshake)
    assert client.tick(17.0) is None
    assert client.tick(62.0) == toyvpn.TICK_EXPIRED  # quiet since t=2


def test_the_client_sends_ipv4_only() -> None:
    client = toyvpn.ToyVpnClient(SECRET, keepalive=15.0, quiet_timeout=60.0)
    v4, v6 = ipv4_packet("10.8.0.129"), bytes([0x60]) + bytes(39)  # a router solicitation, say
    assert client.outgoing([v6, v4, b"", v6], 3.0) == [v4]
    assert client.counters["not_ipv4"] == 3
    assert client.next_deadline() == 3.0 + 15.0  # what was sent postpones the keepalive
    assert client.outgoing([v6], 9.0) == [] and client.next_deadline() == 3.0 + 15.0
