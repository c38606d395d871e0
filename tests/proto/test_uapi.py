"""The UAPI that `wg` speaks: parsing, formatting, framing, the front applying it, the socket."""

from __future__ import annotations

import errno
import ipaddress
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trivpn.control import uapi_server
from trivpn.proto import uapi
from trivpn.proto.wireguard import crypto, keys

net = ipaddress.ip_network


def private_key(seed: int) -> bytes:
    return crypto.clamp(bytes([seed]) * 32)


def public_key(seed: int) -> bytes:
    return crypto.public_key(private_key(seed))


PEER_A, PEER_B, PEER_C = public_key(2), public_key(3), public_key(4)
PSK = bytes(range(32))


def req(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n\n").encode()


def parse_error(request: bytes) -> uapi.UapiError:
    with pytest.raises(uapi.UapiError) as info:
        uapi.parse_request(request)
    return info.value


# --- parsing ------------------------------------------------------------------------------------


def test_get() -> None:
    assert uapi.parse_request(b"get=1\n\n") == uapi.Get()


def test_get_with_keys_is_invalid() -> None:
    assert parse_error(req("get=1", "listen_port=1")).errno == errno.EINVAL


@pytest.mark.parametrize(
    "request_bytes", [b"\n", b"get=2\n\n", b"put=1\n\n", b"GET=1\n\n", b"get=1\r\n\n", b"get=1\n"]
)
def test_unknown_or_unterminated_operation_is_a_protocol_error(request_bytes: bytes) -> None:
    assert parse_error(request_bytes).errno == errno.EPROTO


def test_set_every_device_key_in_order() -> None:
    parsed = uapi.parse_request(
        req(
            "set=1",
            f"private_key={private_key(1).hex()}",
            "listen_port=51820",
            "fwmark=4294967295",
            "replace_peers=true",
        )
    )
    assert parsed == uapi.Set(
        (
            uapi.SetPrivateKey(private_key(1)),
            uapi.SetListenPort(51820),
            uapi.SetFwmark(0xFFFFFFFF),
            uapi.RemoveAllPeers(),
        )
    )


def test_set_every_peer_key() -> None:
    parsed = uapi.parse_request(
        req(
            "set=1",
            f"public_key={PEER_A.hex()}",
            "update_only=true",
            f"preshared_key={PSK.hex()}",
            "endpoint=[2001:db8::7]:51820",
            "persistent_keepalive_interval=25",
            "replace_allowed_ips=true",
            "allowed_ip=10.8.0.2/32",
            "allowed_ip=fd00::2/128",
            "protocol_version=1",
            f"public_key={PEER_B.hex()}",
            "remove=true",
        )
    )
    assert parsed == uapi.Set(
        (
            uapi.ConfigurePeer(
                public_key=PEER_A,
                update_only=True,
                preshared_key=PSK,
                endpoint=("2001:db8::7", 51820),
                persistent_keepalive=25,
                replace_allowed_ips=True,
                allowed_ips=(net("10.8.0.2/32"), net("fd00::2/128")),
            ),
            uapi.RemovePeer(PEER_B),
        )
    )


def test_empty_set_and_bare_peer() -> None:
    assert uapi.parse_request(b"set=1\n\n") == uapi.Set(())
    assert uapi.parse_request(req("set=1", f"public_key={PEER_A.hex()}")) == uapi.Set(
        (uapi.ConfigurePeer(public_key=PEER_A),)
    )


def test_replace_allowed_ips_drops_the_ones_listed_before_it() -> None:
    parsed = uapi.parse_request(
        req(
            "set=1",
            f"public_key={PEER_A.hex()}",
            "allowed_ip=10.0.0.0/8",
            "replace_allowed_ips=true",
            "allowed_ip=10.8.0.2/32",
            "allowed_ip=10.8.0.2/32",
        )
    )
    assert parsed == uapi.Set(
        (
            uapi.ConfigurePeer(
                public_key=PEER_A, replace_allowed_ips=True, allowed_ips=(net("10.8.0.2/32"),)
            ),
        )
    )


def test_lines_after_remove_are_checked_but_ignored() -> None:
    ok = req("set=1", f"public_key={PEER_A.hex()}", "remove=true", "allowed_ip=10.8.0.2/32")
    assert uapi.parse_request(ok) == uapi.Set((uapi.RemovePeer(PEER_A),))
    bad = req("set=1", f"public_key={PEER_A.hex()}", "remove=true", "allowed_ip=10.8.0.2")
    assert parse_error(bad).errno == errno.EINVAL


def test_endpoints_and_allowed_ips_are_normalized() -> None:
    assert uapi.parse_endpoint("192.0.2.1:1") == ("192.0.2.1", 1)
    assert uapi.parse_endpoint("[::ffff:192.0.2.1]:51820") == ("192.0.2.1", 51820)
    assert uapi.parse_endpoint("[2001:DB8:0::1]:65535") == ("2001:db8::1", 65535)
    assert uapi.parse_allowed_ip("10.8.0.77/24") == net("10.8.0.0/24")  # host bits masked
    assert uapi.parse_allowed_ip("0.0.0.0/0") == net("0.0.0.0/0")
    assert uapi.parse_allowed_ip("fd00::1/0") == net("::/0")


@pytest.mark.parametrize(
    "line",
    [
        "listen_port=65536",
        "listen_port=-1",
        "listen_port=+5",
        "listen_port= 5",
        "listen_port=1_0",
        "listen_port=",
        "listen_port=٣",  # a non-ASCII digit: refused before parsing as not ASCII
        "fwmark=4294967296",
        "replace_peers=false",
        "replace_peers=TRUE",
        f"private_key={private_key(1).hex()[:-2]}",
        f"private_key={private_key(1).hex()}00",
        f"private_key={'g' * 64}",
        f"private_key={' ' * 2 + private_key(1).hex()[2:]}",
        "public_key=",
        "bogus=1",
        "protocol_version=1",  # a peer key before any peer
    ],
)
def test_bad_device_lines(line: str) -> None:
    assert parse_error(req("set=1", line)).errno in (errno.EINVAL, errno.EPROTO)


@pytest.mark.parametrize(
    "line",
    [
        "endpoint=192.0.2.1",
        "endpoint=192.0.2.1:0",
        "endpoint=192.0.2.1:65536",
        "endpoint=vpn.example.com:51820",
        "endpoint=2001:db8::1:51820",
        "endpoint=[2001:db8::1]51820",
        "endpoint=[2001:db8::1]:",
        "endpoint=[192.0.2.1]:51820",  # brackets only for IPv6, as wireguard-go's netip
        "endpoint=",
        "allowed_ip=10.8.0.2",
        "allowed_ip=10.8.0.0/33",
        "allowed_ip=fd00::/129",
        "allowed_ip=10.8.0.0/255.255.255.0",
        "allowed_ip=fe80::1%eth0/64",
        "allowed_ip=10.8.0.0/-1",
        "persistent_keepalive_interval=65536",
        "protocol_version=2",
        "remove=1",
        "update_only=false",
        "replace_allowed_ips=yes",
        f"preshared_key={PSK.hex()[:10]}",
        "listen_port=51820",  # a device key inside a peer section
        "replace_peers=true",
    ],
)
def test_bad_peer_lines(line: str) -> None:
    error = parse_error(req("set=1", f"public_key={PEER_A.hex()}", line))
    assert error.errno == errno.EINVAL


@pytest.mark.parametrize(
    "request_bytes",
    [
        req("set=1", "listen_port"),  # no "="
        "set=1\nlisten_port=٣\n\n".encode(),
        b"set=1\nlisten_port=1\x00\n\n",
        b"set=1\nlisten_port=\xff\n\n",
        b"set=1\n\tlisten_port=1\n\n",
    ],
)
def test_not_text_is_a_protocol_error(request_bytes: bytes) -> None:
    assert parse_error(request_bytes).errno == errno.EPROTO


def test_errors_never_repeat_a_key() -> None:
    secret = private_key(9).hex()
    for line in (
        f"private_key={secret[:-1]}z",
        f"listen_port={secret}",
        f"{secret}=1",
        secret,
        f"endpoint={secret}",
    ):
        assert secret[:16] not in str(parse_error(req("set=1", line)))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_fail_cleanly(data: bytes) -> None:
    try:
        uapi.parse_request(data + b"\n\n")
    except uapi.UapiError as e:
        assert e.errno in (errno.EINVAL, errno.EPROTO)


@given(
    st.lists(
        st.sampled_from(
            [
                "listen_port=1",
                "fwmark=0",
                f"public_key={PEER_A.hex()}",
                "allowed_ip=10.0.0.0/8",
                "endpoint=[::1]:1",
                "remove=true",
                "replace_allowed_ips=true",
                "update_only=true",
                "x=y",
                "=",
                "",
            ]
        ),
        max_size=12,
    )
)
def test_arbitrary_set_lines_parse_or_fail_cleanly(lines: list[str]) -> None:
    request = ("set=1\n" + "".join(f"{line}\n" for line in lines) + "\n").encode()
    try:
        parsed = uapi.parse_request(request)
    except uapi.UapiError as e:
        assert e.errno in (errno.EINVAL, errno.EPROTO)
    else:
        assert isinstance(parsed, uapi.Set)


# --- formatting ---------------------------------------------------------------------------------


def snapshot() -> uapi.DeviceSnapshot:
    return uapi.DeviceSnapshot(
        private_key=private_key(1),
        listen_port=51820,
        fwmark=0,
        peers=(
            uapi.PeerSnapshot(
                public_key=PEER_A,
                preshared_key=None,
                endpoint=("198.51.100.2", 40000),
                last_handshake_time=1700000000.25,
                rx_bytes=1234,
                tx_bytes=5678,
                persistent_keepalive=None,
                allowed_ips=(net("10.8.0.2/32"), net("fd00::2/128")),
            ),
            uapi.PeerSnapshot(
                public_key=PEER_B,
                preshared_key=PSK,
                endpoint=("2001:db8::7", 51820),
                last_handshake_time=None,
                rx_bytes=0,
                tx_bytes=0,
                persistent_keepalive=25,
                allowed_ips=(),
            ),
        ),
    )


def test_format_get_as_wireguard_go_does() -> None:
    expected = f"""private_key={private_key(1).hex()}
listen_port=51820
public_key={PEER_A.hex()}
preshared_key={"00" * 32}
protocol_version=1
endpoint=198.51.100.2:40000
last_handshake_time_sec=1700000000
last_handshake_time_nsec=250000000
tx_bytes=5678
rx_bytes=1234
persistent_keepalive_interval=0
allowed_ip=10.8.0.2/32
allowed_ip=fd00::2/128
public_key={PEER_B.hex()}
preshared_key={PSK.hex()}
protocol_version=1
endpoint=[2001:db8::7]:51820
last_handshake_time_sec=0
last_handshake_time_nsec=0
tx_bytes=0
rx_bytes=0
persistent_keepalive_interval=25
errno=0

"""
    assert uapi.format_get(snapshot()).decode() == expected


def test_fwmark_is_shown_when_set_and_errno_is_negated() -> None:
    text = uapi.format_get(uapi.DeviceSnapshot(private_key(1), 0, 7, ())).decode()
    assert text == f"private_key={private_key(1).hex()}\nfwmark=7\nerrno=0\n\n"
    assert uapi.format_errno(errno.EINVAL) == b"errno=-22\n\n"
    assert uapi.format_errno(0) == b"errno=0\n\n"


def test_snapshot_reprs_hide_keys() -> None:
    shown = repr(snapshot()) + repr(uapi.SetPrivateKey(private_key(1)))
    assert private_key(1).hex() not in shown and repr(private_key(1)) not in shown
    assert repr(PSK) not in shown


# --- framing ------------------------------------------------------------------------------------


def test_reader_cuts_requests_across_and_within_chunks() -> None:
    reader = uapi.RequestReader()
    assert reader.feed(b"get=1\n") == []
    assert reader.feed(b"\nset=1\nlisten") == [b"get=1\n\n"]
    assert reader.pending == len(b"set=1\nlisten")
    assert reader.feed(b"_port=1\n\nget=1\n\nget") == [b"set=1\nlisten_port=1\n\n", b"get=1\n\n"]
    assert reader.feed(b"=1\n\n") == [b"get=1\n\n"]
    assert reader.pending == 0


def test_reader_byte_by_byte() -> None:
    reader = uapi.RequestReader()
    stream = b"get=1\n\nset=1\nfwmark=0\n\n\n"
    got = [r for i in range(len(stream)) for r in reader.feed(stream[i : i + 1])]
    assert got == [b"get=1\n\n", b"set=1\nfwmark=0\n\n", b"\n"]


def test_reader_is_bounded() -> None:
    reader = uapi.RequestReader(max_bytes=64)
    with pytest.raises(uapi.RequestTooLarge) as info:
        for _ in range(100):
            reader.feed(b"allowed_ip=10.0.0.0/8\n")
    assert info.value.errno == errno.EMSGSIZE
    assert reader.pending <= 64 + len(b"allowed_ip=10.0.0.0/8\n")
    complete = uapi.RequestReader(max_bytes=64)
    with pytest.raises(uapi.RequestTooLarge):
        complete.feed(b"set=1\n" + b"fwmark=0\n" * 10 + b"\n")


@given(st.lists(st.binary(max_size=50), max_size=40))
def test_reader_never_holds_more_than_its_bound(chunks: list[bytes]) -> None:
    reader = uapi.RequestReader(max_bytes=100)
    for chunk in chunks:
        try:
            for request in reader.feed(chunk):
                assert len(request) <= 100 and request.endswith(b"\n")
        except uapi.RequestTooLarge:
            return
        assert reader.pending <= 100


# --- respond against a fake target ---------------------------------------------------------------


class FakeTarget:
    def __init__(self, refuse: uapi.UapiError | None = None) -> None:
        self.applied: list[Sequence[uapi.Operation]] = []
        self.refuse = refuse

    def uapi_snapshot(self) -> uapi.DeviceSnapshot:
        return snapshot()

    def uapi_device_snapshot(self) -> uapi.DeviceSnapshot:
        return attrs.evolve(snapshot(), peers=())

    def uapi_peer_keys(self) -> list[bytes]:
        return [peer.public_key for peer in snapshot().peers]

    def uapi_peer_snapshot(self, public_key: bytes) -> uapi.PeerSnapshot | None:
        return next((p for p in snapshot().peers if p.public_key == public_key), None)

    def uapi_apply(self, operations: Sequence[uapi.Operation]) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.applied.append(operations)


def test_respond() -> None:
    target = FakeTarget()
    assert uapi.respond(b"get=1\n\n", target).data == uapi.format_get(snapshot())
    answer = uapi.respond(req("set=1", "fwmark=0"), target)
    assert answer == uapi.Answer(b"errno=0\n\n", None)
    assert target.applied == [(uapi.SetFwmark(0),)]
    bad = uapi.respond(req("set=1", "fwmark=x", "listen_port=1"), target)
    assert bad.data == b"errno=-22\n\n" and bad.error is not None
    assert len(target.applied) == 1  # nothing of a bad request reaches the target
    refused = FakeTarget(uapi.UapiError(errno.EOPNOTSUPP, "no"))
    assert uapi.respond(req("set=1", "listen_port=1"), refused).data == b"errno=-95\n\n"


# --- the socket ---------------------------------------------------------------------------------


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Short: a unix socket path has at most 107 bytes, more than pytest's tmp_path may leave.
    base = Path(tempfile.mkdtemp(prefix="uapi", dir="/tmp"))
    yield base / "wireguard"
    shutil.rmtree(base)


async def exchange(path: Path, data: bytes, answers: int = 1) -> bytes:
    """Send ``data``, read until ``answers`` answers (each ends in errno=N and a blank line)."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.connect(os.fspath(path))
    async with trio.SocketStream(sock) as stream:
        await stream.send_all(data)
        received = b""
        while received.count(b"errno=") < answers or not received.endswith(b"\n\n"):
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            received += chunk
        return received


async def test_socket_serves_get_and_set_and_goes_away(sock_dir: Path) -> None:
    target = FakeTarget()
    path = sock_dir / "tv0.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: uapi_server.serve_uapi(
            target, "tv0", directory=sock_dir, task_status=task_status
        ))  # fmt: skip
        assert stat.S_IMODE(os.stat(sock_dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert await exchange(path, b"get=1\n\n") == uapi.format_get(snapshot())
        assert await exchange(path, req("set=1", "fwmark=0")) == b"errno=0\n\n"
        assert await exchange(path, req("set=1", "fwmark=x")) == b"errno=-22\n\n"
        # two requests on one connection
        two = await exchange(path, b"set=1\nfwmark=0\n\nget=1\n\n", answers=2)
        assert two == b"errno=0\n\n" + uapi.format_get(snapshot())
        nursery.cancel_scope.cancel()
    assert not path.exists()
    assert target.applied == [(uapi.SetFwmark(0),), (uapi.SetFwmark(0),)]


async def test_oversized_request_is_refused_and_closed(sock_dir: Path) -> None:
    target = FakeTarget()
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: uapi_server.serve_uapi(
            target, "tv1", directory=sock_dir, max_request=256, task_status=task_status
        ))  # fmt: skip
        answer = await exchange(sock_dir / "tv1.sock", b"set=1\n" + b"fwmark=0\n" * 100)
        assert answer == b"errno=-90\n\n"
        nursery.cancel_scope.cancel()
    assert target.applied == []


async def test_a_silent_client_is_dropped(
    sock_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: uapi_server.serve_uapi(
            FakeTarget(), "tv2", directory=sock_dir, timeout=5, task_status=task_status
        ))  # fmt: skip
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.connect(os.fspath(sock_dir / "tv2.sock"))
        async with trio.SocketStream(sock) as stream:
            await stream.send_all(b"get=1\n")  # never finished
            start = trio.current_time()
            assert await stream.receive_some(100) == b""  # closed by the server
            assert trio.current_time() - start == pytest.approx(5)
        nursery.cancel_scope.cancel()


async def test_connections_at_once_are_bounded(
    sock_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = sock_dir / "tv3.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: uapi_server.serve_uapi(
            FakeTarget(), "tv3", directory=sock_dir, max_connections=1, task_status=task_status
        ))  # fmt: skip
        first = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await first.connect(os.fspath(path))
        await trio.testing.wait_all_tasks_blocked()
        second = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await second.connect(os.fspath(path))
        with trio.fail_after(1):
            assert await second.recv(100) == b""  # refused at once
        first.close()
        second.close()
        await trio.testing.wait_all_tasks_blocked()  # the server has seen both go
        assert await exchange(path, b"get=1\n\n") == uapi.format_get(snapshot())
        nursery.cancel_scope.cancel()


async def test_stale_socket_is_replaced_live_one_left_alone(sock_dir: Path) -> None:
    sock_dir.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.fspath(sock_dir / "tv4.sock"))
    stale.close()  # the file stays: what a killed process leaves
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(os.fspath(sock_dir / "tv5.sock"))
    live.listen(1)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: uapi_server.serve_uapi(
                FakeTarget(), "tv4", directory=sock_dir, task_status=task_status
            ))  # fmt: skip
            assert await exchange(sock_dir / "tv4.sock", b"get=1\n\n") == uapi.format_get(
                snapshot()
            )
            # tv5 is someone else's: the task logs it and ends, the socket stays theirs.
            await uapi_server.serve_uapi(FakeTarget(), "tv5", directory=sock_dir)
            assert (sock_dir / "tv5.sock").exists()
            nursery.cancel_scope.cancel()
    finally:
        live.close()


async def test_unsafe_places_are_refused(sock_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    sock_dir.mkdir(mode=0o700)
    (sock_dir / "tv6.sock").write_text("not a socket")
    await uapi_server.serve_uapi(FakeTarget(), "tv6", directory=sock_dir)
    assert (sock_dir / "tv6.sock").read_text() == "not a socket"
    os.chmod(sock_dir, 0o777)
    await uapi_server.serve_uapi(FakeTarget(), "tv7", directory=sock_dir)
    assert not (sock_dir / "tv7.sock").exists()
    await uapi_server.serve_uapi(FakeTarget(), "x" * 120, directory=sock_dir)
    messages = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("is not a socket" in m for m in messages)
    assert any("writable by others" in m for m in messages)
    assert any("longer than a unix socket path" in m for m in messages)


def test_socket_path() -> None:
    assert uapi_server.socket_path("wg0") == Path("/var/run/wireguard/wg0.sock")
    assert keys.encode_key(PEER_A)  # the test keys are valid public keys
