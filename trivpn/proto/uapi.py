"""The cross-platform userspace API (UAPI) that `wg` speaks to wireguard-go, sans-IO.

A request is ASCII lines ending in an empty line: ``get=1`` alone, or ``set=1`` followed by
``key=value`` lines: device keys first (``private_key``, ``listen_port``, ``fwmark``,
``replace_peers``), then one section per peer, each opened by ``public_key`` (``remove``,
``update_only``, ``preshared_key``, ``endpoint``, ``persistent_keepalive_interval``,
``replace_allowed_ips``, ``allowed_ip``, ``protocol_version``). Keys travel as 64 hex digits;
an all-zero preshared key means "none". The answer to ``get`` is the device's state in the
same form; every answer ends with ``errno=N`` and an empty line, N being 0 or, as
wireguard-go sends it, a negated errno.h value.

Here: :class:`RequestReader` cuts a byte stream into bounded requests, :func:`parse_request`
turns one into :class:`Get` or :class:`Set` (a tuple of typed operations, every value
checked before anything is applied), :func:`format_get` renders a :class:`DeviceSnapshot`,
and :func:`respond` does the whole exchange against a :class:`Target` (the WireGuard front).
No sockets, no clock, no trio.
"""

from __future__ import annotations

import errno
import ipaddress
import re
from collections.abc import Sequence
from typing import Final, Protocol

import attrs

from trivpn.proto.endpoints import EndpointSyntaxError, format_endpoint, parse_host_port
from trivpn.proto.ip import IPNetwork

Address = tuple[str, int]

KEY_LEN: Final = 32
ZERO_KEY: Final = bytes(KEY_LEN)
# wg syncconf of a few thousand peers is well under this; anything larger is refused.
MAX_REQUEST_BYTES: Final = 1 << 20

_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_UINT = re.compile(r"[0-9]{1,20}")
_KEY_NAME = re.compile(r"[a-z_]{1,40}")


class UapiError(Exception):
    """A request refused: ``errno`` (positive, from errno.h) goes back to the client.

    The message is for the log: it names keys, never repeats values (one may be a secret).
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code


# --- requests and operations -----------------------------------------------------------------


@attrs.frozen
class Get:
    """``get=1``: report the device and its peers."""


@attrs.frozen
class SetPrivateKey:
    private_key: bytes = attrs.field(repr=False)  # all zeros: remove the key


@attrs.frozen
class SetListenPort:
    port: int


@attrs.frozen
class SetFwmark:
    mark: int  # 0: none


@attrs.frozen
class RemoveAllPeers:
    """``replace_peers=true``: the peers that follow replace all current ones."""


@attrs.frozen
class RemovePeer:
    public_key: bytes


@attrs.frozen
class ConfigurePeer:
    """Create the peer (unless ``update_only``) or update it; None fields stay as they are."""

    public_key: bytes
    update_only: bool = False
    preshared_key: bytes | None = attrs.field(default=None, repr=False)  # ZERO_KEY: none
    endpoint: Address | None = None
    persistent_keepalive: int | None = None  # 0: off
    replace_allowed_ips: bool = False  # else allowed_ips are added to the current ones
    allowed_ips: tuple[IPNetwork, ...] = ()


Operation = SetPrivateKey | SetListenPort | SetFwmark | RemoveAllPeers | RemovePeer | ConfigurePeer


@attrs.frozen
class Set:
    """``set=1``: operations to apply in order."""

    operations: tuple[Operation, ...]


Request = Get | Set


# --- what a get reports --------------------------------------------------------------------------


@attrs.frozen
class PeerSnapshot:
    public_key: bytes
    preshared_key: bytes | None = attrs.field(repr=False)
    endpoint: Address | None
    last_handshake_time: float | None  # seconds since the epoch
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int | None
    allowed_ips: tuple[IPNetwork, ...]


@attrs.frozen
class DeviceSnapshot:
    private_key: bytes = attrs.field(repr=False)
    listen_port: int
    fwmark: int
    peers: tuple[PeerSnapshot, ...]


class Target(Protocol):
    """What the UAPI configures: the WireGuard front."""

    def uapi_snapshot(self) -> DeviceSnapshot: ...

    def uapi_device_snapshot(self) -> DeviceSnapshot:
        """The snapshot with no peers: what a ``get`` made in slices starts with."""

    def uapi_peer_keys(self) -> list[bytes]:
        """The public keys of the peers now, in ``get``'s order."""

    def uapi_peer_snapshot(self, public_key: bytes) -> PeerSnapshot | None:
        """One peer as it is now; None if it has gone since."""

    def uapi_apply(self, operations: Sequence[Operation]) -> None:
        """Apply all operations or, raising UapiError, none."""


# --- framing -----------------------------------------------------------------------------------


class RequestTooLarge(UapiError):
    def __init__(self, limit: int) -> None:
        super().__init__(errno.EMSGSIZE, f"request larger than {limit} bytes")


class RequestReader:
    """Cuts received bytes into requests (each ends at the first empty line), bounded."""

    def __init__(self, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._scanned = 0  # the buffer holds no "\n\n" before this offset

    def feed(self, data: bytes) -> list[bytes]:
        """The requests completed by ``data``; RequestTooLarge if one grows past the bound."""
        buffer = self._buffer
        buffer += data
        requests: list[bytes] = []
        while buffer:
            if buffer[0] == 0x0A:
                end = 1  # an empty request: cut it off here, parse_request refuses it
            else:
                found = buffer.find(b"\n\n", self._scanned)
                if found < 0:
                    self._scanned = max(0, len(buffer) - 1)
                    break
                end = found + 2
            if end > self.max_bytes:
                raise RequestTooLarge(self.max_bytes)
            requests.append(bytes(buffer[:end]))
            del buffer[:end]
            self._scanned = 0
        if len(buffer) > self.max_bytes:
            raise RequestTooLarge(self.max_bytes)
        return requests

    @property
    def pending(self) -> int:
        """Bytes of a request not yet complete (non-zero at EOF: the client hung up mid-way)."""
        return len(self._buffer)


# --- parsing -----------------------------------------------------------------------------------


def _invalid(message: str) -> UapiError:
    return UapiError(errno.EINVAL, message)


def _parse_key(key: str, value: str) -> bytes:
    if not _HEX_KEY.fullmatch(value):
        # Never echo the value: it may be a private or preshared key.
        raise _invalid(f"{key}: expected 64 hex digits")
    return bytes.fromhex(value)


def _parse_uint(key: str, value: str, maximum: int) -> int:
    if not _UINT.fullmatch(value) or int(value) > maximum:
        raise _invalid(f"{key}: expected an integer 0..{maximum}")
    return int(value)


def _parse_true(key: str, value: str) -> None:
    # The protocol knows only "true" for these flags, as wireguard-go checks.
    if value != "true":
        raise _invalid(f"{key}: the only value is 'true'")


def _parse_ip(key: str, text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise _invalid(f"{key}: not an IP address") from None


def parse_endpoint(value: str) -> Address:
    """``1.2.3.4:51820`` or ``[2001:db8::1]:51820`` (wg resolves names before sending)."""
    try:
        host, port = parse_host_port(value)
    except EndpointSyntaxError as e:
        raise _invalid(f"endpoint: {e}") from None
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # as received addresses are shown (udp.plain_address)
    return str(address), port


def parse_allowed_ip(value: str) -> IPNetwork:
    """``10.8.0.2/32`` or ``fd00::2/128``; host bits are masked off, as wireguard-go does."""
    address, sep, length = value.partition("/")
    if not sep or "%" in address:
        raise _invalid("allowed_ip: expected address/prefix-length")
    ip = _parse_ip("allowed_ip", address)
    plen = _parse_uint("allowed_ip prefix length", length, ip.max_prefixlen)
    return ipaddress.ip_network((ip, plen), strict=False)


@attrs.define
class _PeerSection:
    """The peer lines read so far; ``removed`` ignores (but still checks) the rest."""

    public_key: bytes
    removed: bool = False
    update_only: bool = False
    preshared_key: bytes | None = None
    endpoint: Address | None = None
    persistent_keepalive: int | None = None
    replace_allowed_ips: bool = False
    allowed_ips: list[IPNetwork] = attrs.Factory(list)

    def operation(self) -> Operation:
        if self.removed:
            return RemovePeer(self.public_key)
        return ConfigurePeer(
            public_key=self.public_key,
            update_only=self.update_only,
            preshared_key=self.preshared_key,
            endpoint=self.endpoint,
            persistent_keepalive=self.persistent_keepalive,
            replace_allowed_ips=self.replace_allowed_ips,
            allowed_ips=tuple(dict.fromkeys(self.allowed_ips)),
        )

    def set(self, key: str, value: str) -> None:
        if key == "remove":
            _parse_true(key, value)
            self.removed = True
        elif key == "update_only":
            _parse_true(key, value)
            self.update_only = True
        elif key == "preshared_key":
            self.preshared_key = _parse_key(key, value)
        elif key == "endpoint":
            self.endpoint = parse_endpoint(value)
        elif key == "persistent_keepalive_interval":
            self.persistent_keepalive = _parse_uint(key, value, 65535)
        elif key == "replace_allowed_ips":
            _parse_true(key, value)
            # In line order, as wireguard-go applies them: a replace drops those before it.
            self.replace_allowed_ips = True
            self.allowed_ips.clear()
        elif key == "allowed_ip":
            self.allowed_ips.append(parse_allowed_ip(value))
        elif key == "protocol_version":
            if value != "1":
                raise _invalid("protocol_version: only 1 is known")
        else:
            raise _invalid(f"not a peer key: {_shown_key(key)}")


def _shown_key(key: str) -> str:
    # An unknown key is named in the log only if it looks like a key name, never like a secret.
    return repr(key) if _KEY_NAME.fullmatch(key) else "(not a key name)"


def _device_operation(key: str, value: str) -> Operation:
    if key == "private_key":
        return SetPrivateKey(_parse_key(key, value))
    if key == "listen_port":
        return SetListenPort(_parse_uint(key, value, 65535))
    if key == "fwmark":
        return SetFwmark(_parse_uint(key, value, 0xFFFFFFFF))
    if key == "replace_peers":
        _parse_true(key, value)
        return RemoveAllPeers()
    raise _invalid(f"not a device key: {_shown_key(key)}")


def _parse_set(lines: list[str]) -> Set:
    operations: list[Operation] = []
    section: _PeerSection | None = None
    for line in lines:
        key, sep, value = line.partition("=")
        if not sep:
            raise UapiError(errno.EPROTO, "a line without '=' (not key=value)")
        if key == "public_key":
            if section is not None:
                operations.append(section.operation())
            section = _PeerSection(_parse_key(key, value))
        elif section is None:
            operations.append(_device_operation(key, value))
        else:
            section.set(key, value)
    if section is not None:
        operations.append(section.operation())
    return Set(tuple(operations))


def parse_request(request: bytes) -> Request:
    """One request as cut by RequestReader (ending in an empty line). UapiError if bad."""
    if not request.endswith(b"\n\n"):
        raise UapiError(errno.EPROTO, "a request ends with an empty line")
    try:
        text = request[:-2].decode("ascii")
    except UnicodeDecodeError:
        raise UapiError(errno.EPROTO, "a request is ASCII text") from None
    lines = text.split("\n")
    if not all(line.isprintable() for line in lines):
        raise UapiError(errno.EPROTO, "a request holds no control characters but its newlines")
    command = lines[0]
    if command == "get=1":
        if len(lines) > 1:
            raise _invalid("get=1 takes no keys")
        return Get()
    if command == "set=1":
        return _parse_set(lines[1:])
    raise UapiError(errno.EPROTO, "unknown operation (expected get=1 or set=1)")


# --- formatting ----------------------------------------------------------------------------------


def format_errno(code: int) -> bytes:
    """The closing lines of every answer; ``code`` positive (errno.h) or 0 for success."""
    return f"errno={-code if code else 0}\n\n".encode()


def format_get(snapshot: DeviceSnapshot) -> bytes:
    """The answer to ``get=1``: keys in hex, the same lines in the same order as wireguard-go."""
    lines = format_device(snapshot)
    for peer in snapshot.peers:
        lines += format_peer(peer)
    return format_lines(lines)


def format_device(snapshot: DeviceSnapshot) -> list[str]:
    """The lines of ``get=1`` before the peers' (``snapshot.peers`` is not read)."""
    lines = [f"private_key={snapshot.private_key.hex()}"]
    if snapshot.listen_port:
        lines.append(f"listen_port={snapshot.listen_port}")
    if snapshot.fwmark:
        lines.append(f"fwmark={snapshot.fwmark}")
    return lines


def format_peer(peer: PeerSnapshot) -> list[str]:
    """One peer's lines of ``get=1``."""
    lines = [
        f"public_key={peer.public_key.hex()}",
        f"preshared_key={(peer.preshared_key or ZERO_KEY).hex()}",
        "protocol_version=1",
    ]
    if peer.endpoint is not None:
        lines.append(f"endpoint={format_endpoint(peer.endpoint)}")
    seconds, nanoseconds = _split_time(peer.last_handshake_time)
    lines.append(f"last_handshake_time_sec={seconds}")
    lines.append(f"last_handshake_time_nsec={nanoseconds}")
    lines.append(f"tx_bytes={peer.tx_bytes}")
    lines.append(f"rx_bytes={peer.rx_bytes}")
    lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive or 0}")
    lines.extend(f"allowed_ip={network}" for network in peer.allowed_ips)
    return lines


def format_lines(lines: Sequence[str]) -> bytes:
    """A whole ``get=1`` answer of these lines."""
    return ("\n".join(lines) + "\n").encode() + format_errno(0)


def _split_time(when: float | None) -> tuple[int, int]:
    if when is None or when <= 0:
        return 0, 0
    seconds = int(when)
    # The fraction alone: scaling the whole time would lose the low digits to rounding.
    return seconds, min(round((when - seconds) * 1e9), 999_999_999)


# --- the exchange -------------------------------------------------------------------------------


@attrs.frozen
class Answer:
    data: bytes  # what goes back to the client
    error: UapiError | None  # why the request was refused, for the log (never holds keys)


def respond(request: bytes, target: Target) -> Answer:
    """The answer to one request; a refused request answers with its errno."""
    try:
        parsed = parse_request(request)
        if isinstance(parsed, Get):
            return Answer(format_get(target.uapi_snapshot()), None)
        target.uapi_apply(parsed.operations)
    except UapiError as e:
        return Answer(format_errno(e.errno), e)
    return Answer(format_errno(0), None)
