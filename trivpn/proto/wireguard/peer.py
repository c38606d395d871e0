"""One WireGuard peer: sessions, timers, encapsulate / decapsulate / tick (cf. boringtun's Tunn).

The Device routes datagrams here after the checks that need no peer (lengths, mac1,
cookies, index lookup). Every method appends what must happen to an :class:`Output`.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Final, NamedTuple, Protocol

import attrs

from ..ip import IPNetwork as IPNetwork  # re-exported by the package
from ..token_bucket import TokenBucket
from . import crypto
from .cookie import Address, CookieGenerator, RandomBytes
from .keypair import Keypair
from .keys import peer_label
from .messages import INITIATION_LEN, RESPONSE_LEN, CookieReply, Response
from .noise import Handshake, HandshakeError, OpenedInitiation, StaticIdentity
from .timers import (
    KEEPALIVE_TIMEOUT,
    MAX_TIMER_HANDSHAKES,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_BEFORE_REJECT_RECEIVING,
    REKEY_TIMEOUT,
    STAGED_PACKETS_MAX,
    ZERO_KEYS_AFTER,
    PeerTimers,
    Timer,
    jitter_from,
)

_IPV4_HEADER: Final = 20
_IPV6_HEADER: Final = 40
_INDEX_ATTEMPTS: Final = 64


def _check_key(_: object, attribute: attrs.Attribute[bytes], value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise ValueError(f"{attribute.name} must be 32 bytes")


def _check_psk(_: object, attribute: attrs.Attribute[bytes | None], value: bytes | None) -> None:
    if value is not None and (not isinstance(value, bytes) or len(value) != 32):
        raise ValueError(f"{attribute.name} must be 32 bytes or None")


def _networks(value: Iterable[IPNetwork | str]) -> tuple[IPNetwork, ...]:
    # Strings are accepted for convenience; host bits set is an error, as in wg(8) configs.
    return tuple(v if not isinstance(v, str) else ipaddress.ip_network(v) for v in value)


def _keepalive_interval(value: int | None) -> int | None:
    # 0 means "off", as in wg(8).
    return value or None


def _check_keepalive(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and not 1 <= value <= 65535:
        raise ValueError(f"{attribute.name} must be 1..65535 seconds, or 0/None for off")


@attrs.frozen
class PeerConfig:
    """What the configuration says about one peer."""

    public_key: bytes = attrs.field(validator=_check_key)
    preshared_key: bytes | None = attrs.field(default=None, repr=False, validator=_check_psk)
    allowed_ips: tuple[IPNetwork, ...] = attrs.field(default=(), converter=_networks)
    endpoint: Address | None = None
    persistent_keepalive: int | None = attrs.field(
        default=None, converter=_keepalive_interval, validator=_check_keepalive
    )
    name: str = ""
    # allowed_ips as (network, mask) ints per family, for StaticAllowedIps' source check
    _masks_v4: tuple[tuple[int, int], ...] = attrs.field(init=False, eq=False, repr=False)
    _masks_v6: tuple[tuple[int, int], ...] = attrs.field(init=False, eq=False, repr=False)

    @_masks_v4.default
    def _v4(self) -> tuple[tuple[int, int], ...]:
        return _masks(self.allowed_ips, 4)

    @_masks_v6.default
    def _v6(self) -> tuple[tuple[int, int], ...]:
        return _masks(self.allowed_ips, 6)

    def allows_source(self, source: bytes) -> bool:
        """Whether a packed address (4 or 16 bytes) is inside ``allowed_ips``."""
        value = int.from_bytes(source, "big")
        masks = self._masks_v4 if len(source) == 4 else self._masks_v6
        return any(value & mask == net for net, mask in masks)


def _masks(nets: tuple[IPNetwork, ...], version: int) -> tuple[tuple[int, int], ...]:
    return tuple((int(n.network_address), int(n.netmask)) for n in nets if n.version == version)


class AllowedIps(Protocol):
    """Cryptokey routing as the device sees it: the networks each peer owns. The server's
    route table (trivpn.dataplane.wireguard.routes) is one; StaticAllowedIps, the
    configured allowed_ips, is the default of a device on its own."""

    def allows(self, peer: Peer, source: bytes) -> bool:
        """Whether a decrypted packet from ``peer`` may have this source (4 or 16 bytes)."""

    def networks_of(self, peer: Peer) -> tuple[IPNetwork, ...]:
        """The peer's allowed_ips, as `wg show` reports them."""


class StaticAllowedIps:
    """Each peer owns the allowed_ips of the PeerConfig it was added with."""

    def allows(self, peer: Peer, source: bytes) -> bool:
        return peer.config.allows_source(source)

    def networks_of(self, peer: Peer) -> tuple[IPNetwork, ...]:
        return peer.config.allowed_ips


# --- what the protocol tells the server --------------------------------------------------


@attrs.frozen(eq=False)
class HandshakeCompleted:
    """A new session is in use (initiator: response received; responder: first data)."""

    peer: Peer
    initiator: bool


@attrs.frozen(eq=False)
class EndpointChanged:
    """The peer's endpoint follows its latest authenticated packet (roaming)."""

    peer: Peer
    old: Address | None
    new: Address


@attrs.frozen(eq=False)
class HandshakeFailed:
    """No handshake completed within REKEY_ATTEMPT_TIME; queued packets were dropped."""

    peer: Peer


@attrs.frozen(eq=False)
class SessionExpired:
    """All key material of the peer was erased (3 x REJECT_AFTER_TIME without a new one)."""

    peer: Peer


@attrs.frozen(eq=False)
class QuotaReached:
    """The peer's usage (rx + tx bytes) reached the mark Device.set_usage_limit set: its
    warning mark, or its limit (from then on its packets are dropped until the limit moves).
    Raised once per mark."""

    peer: Peer


Event = HandshakeCompleted | EndpointChanged | HandshakeFailed | SessionExpired | QuotaReached


@attrs.define(slots=True)
class Output:
    """What to do after a call. May be passed back in to batch several calls into one."""

    datagrams: list[tuple[bytes, Address]] = attrs.Factory(list)  # send on UDP
    packets: list[bytes] = attrs.Factory(list)  # decrypted, source-checked: write to TUN
    events: list[Event] = attrs.Factory(list)

    def clear(self) -> None:
        self.datagrams.clear()
        self.packets.clear()
        self.events.clear()

    def is_empty(self) -> bool:
        return not (self.datagrams or self.packets or self.events)


# --- shared device state the peers use ---------------------------------------------------


class IndexEntry(NamedTuple):
    """What one of our receiver indices stands for (a tuple: built per handshake, read per
    datagram)."""

    peer: Peer
    keypair: Keypair | None  # None: a handshake in progress


class IndexTable:
    """Our random 32-bit receiver indices -> IndexEntry."""

    def __init__(self, rng: RandomBytes) -> None:
        self._rng = rng
        self.entries: dict[int, IndexEntry] = {}

    def new_index(self, peer: Peer) -> int:
        # 0 is reserved to mean "no index"; a free one is found almost always at once.
        for _ in range(_INDEX_ATTEMPTS):
            index = int.from_bytes(self._rng(4), "little")
            if index and index not in self.entries:
                self.entries[index] = IndexEntry(peer, None)
                return index
        raise RuntimeError("the random source keeps returning used indices")

    def bind_keypair(self, index: int, peer: Peer, keypair: Keypair) -> None:
        self.entries[index] = IndexEntry(peer, keypair)

    def release(self, index: int) -> None:
        self.entries.pop(index, None)

    def __len__(self) -> int:
        return len(self.entries)


@attrs.define
class DeviceContext:
    identity: StaticIdentity
    rng: RandomBytes
    wallclock: Callable[[], float]
    counters: Counter[str]
    cipher: crypto.TransportCipher
    index: IndexTable
    allowed_ips: AllowedIps
    mtu: int | None


class Peer:
    """Protocol state for one peer. Create through ``Device.add_peer``."""

    def __init__(self, config: PeerConfig, ctx: DeviceContext) -> None:
        self.config = config
        self.public_key = config.public_key
        self.name = config.name
        self.endpoint: Address | None = config.endpoint
        self.persistent_keepalive = config.persistent_keepalive
        self._ctx = ctx
        self._source_allowed = ctx.allowed_ips.allows  # bound once: asked per packet
        self.handshake = Handshake(ctx.identity, config.public_key, config.preshared_key)
        self.cookies = CookieGenerator(config.public_key)
        self.timers = PeerTimers()
        self.previous: Keypair | None = None
        self.current: Keypair | None = None
        self.next: Keypair | None = None
        self.staged: deque[bytes] = deque()
        self.last_sent_handshake = float("-inf")
        self.last_received = float("-inf")  # the latest authenticated transport datagram
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.rx_packets = 0  # transport data messages (keepalives included)
        self.tx_packets = 0
        self.handshakes = 0  # completed, in either role
        self.last_handshake_time: float | None = None  # wall clock, for status output
        self.removed = False
        self.blocked = False  # by its policy (Device.set_blocked)
        # Limits (Device.set_usage_limit, Device.set_rates); ``limited`` is the one flag the
        # hot path reads when there are none.
        self.limited = False
        self.usage_limit = math.inf  # rx_bytes + tx_bytes at which its packets stop
        self._usage_mark = math.inf  # rx_bytes + tx_bytes at which QuotaReached is raised
        self.rate_down: TokenBucket | None = None  # toward the peer
        self.rate_up: TokenBucket | None = None  # from the peer
        if self.persistent_keepalive:
            # Like wg(8): a keepalive (and so a handshake) right away, on the next tick.
            self.timers.persistent_keepalive = float("-inf")

    @property
    def label(self) -> str:
        """How logs name this peer: its name, else the start of its public key."""
        return peer_label(self.public_key, self.name)

    def __repr__(self) -> str:
        return f"Peer({self.label})"

    @property
    def allowed_ips(self) -> tuple[IPNetwork, ...]:
        return self._ctx.allowed_ips.networks_of(self)

    @property
    def preshared_key(self) -> bytes | None:
        return self.config.preshared_key

    @property
    def keypairs(self) -> tuple[Keypair | None, Keypair | None, Keypair | None]:
        return self.previous, self.current, self.next

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    # --- encapsulate ---------------------------------------------------------------------

    def send(self, packet: bytes, now: float, out: Output) -> None:
        """Encrypt an IP packet to this peer, or queue it and start a handshake."""
        if self.limited:
            bucket = self.rate_down  # before queueing: a queued packet has been let through
            if bucket is not None and packet and not bucket.take(len(packet), now):
                self._ctx.counters["rate_limited"] += 1
                return
        kp = self.current
        if (
            kp is not None
            and not self.staged
            and self.endpoint is not None
            and now - kp.created < REJECT_AFTER_TIME
        ):
            counter = kp.next_send_counter()
            if counter is not None:
                self._transmit(kp, counter, packet, now, out)
                self._keep_key_fresh_sending(kp, now, out)
                return
        if len(self.staged) >= STAGED_PACKETS_MAX:
            self.staged.popleft()
            self._ctx.counters["staged_dropped"] += 1
        self.staged.append(packet)
        self._send_staged(now, out)

    def _drop_at_limit(self, out: Output) -> None:
        """A datagram either way while usage is at the limit: dropped, counted "blocked"."""
        self._ctx.counters["blocked"] += 1
        if self.rx_bytes + self.tx_bytes >= self._usage_mark:
            self._mark_reached(out)  # reached by handshake bytes, say: raised here then

    def _mark_reached(self, out: Output) -> None:
        """Raise QuotaReached for the mark usage reached; the next mark is the limit."""
        limit = self.usage_limit
        self._usage_mark = limit if self._usage_mark < limit else math.inf
        out.events.append(QuotaReached(self))

    def set_usage_limit(self, limit: float, mark: float) -> None:
        """See Device.set_usage_limit (absolute values: rx_bytes + tx_bytes)."""
        self.usage_limit = limit
        self._usage_mark = min(mark, limit)
        self._update_limited()

    def set_rates(self, down: TokenBucket | None, up: TokenBucket | None) -> None:
        self.rate_down = down
        self.rate_up = up
        self._update_limited()

    def _update_limited(self) -> None:
        self.limited = (
            self.usage_limit != math.inf
            or self._usage_mark != math.inf
            or self.rate_down is not None
            or self.rate_up is not None
        )

    def _transmit(self, kp: Keypair, counter: int, packet: bytes, now: float, out: Output) -> None:
        # Checked here, so queued packets too stop at the limit (queued before a handshake).
        if self.limited and self.rx_bytes + self.tx_bytes >= self.usage_limit:
            self._drop_at_limit(out)
            return
        n = len(packet)
        padded = (n + 15) & ~15
        mtu = self._ctx.mtu
        if mtu is not None and n <= mtu < padded:
            padded = mtu  # padding never makes a packet exceed the tunnel MTU
        datagram = self._ctx.cipher.seal(kp.send_key, kp.remote_index, counter, packet, padded)
        assert self.endpoint is not None
        out.datagrams.append((datagram, self.endpoint))
        self.tx_bytes += len(datagram)
        self.tx_packets += 1
        timers = self.timers
        if self.persistent_keepalive:
            timers.persistent_keepalive = now + self.persistent_keepalive
        timers.send_keepalive = None  # any authenticated packet sent
        if n and timers.new_handshake is None:
            timers.on_data_sent(now, self._jitter())
        if self.limited and self.rx_bytes + self.tx_bytes >= self._usage_mark:
            self._mark_reached(out)

    def _send_staged(self, now: float, out: Output) -> None:
        staged = self.staged
        if not staged:
            return
        kp = self.current
        if (
            kp is None
            or kp.send_counter >= REJECT_AFTER_MESSAGES
            or now - kp.created >= REJECT_AFTER_TIME
        ):
            self._initiate(now, out, is_retry=False)
            return
        if self.endpoint is None:
            self._ctx.counters["no_endpoint"] += len(staged)
            staged.clear()
            return
        while staged:
            counter = kp.next_send_counter()
            if counter is None:
                self._initiate(now, out, is_retry=False)
                return
            self._transmit(kp, counter, staged.popleft(), now, out)
        self._keep_key_fresh_sending(kp, now, out)

    def _send_keepalive(self, now: float, out: Output) -> None:
        if not self.staged:
            self.staged.append(b"")
        self._send_staged(now, out)

    def _keep_key_fresh_sending(self, kp: Keypair, now: float, out: Output) -> None:
        if kp.send_counter > REKEY_AFTER_MESSAGES or (
            kp.is_initiator and now - kp.created > REKEY_AFTER_TIME
        ):
            self._initiate(now, out, is_retry=False)

    # --- handshake -----------------------------------------------------------------------

    def _jitter(self) -> float:
        return jitter_from(self._ctx.rng(2))

    def _initiate(self, now: float, out: Output, *, is_retry: bool) -> None:
        """Send a handshake initiation, at most one per REKEY_TIMEOUT."""
        if not is_retry:
            self.timers.handshake_attempts = 0
        if self.blocked:
            return
        if now < self.last_sent_handshake + REKEY_TIMEOUT:
            return
        endpoint = self.endpoint
        if endpoint is None:
            self._ctx.counters["no_endpoint"] += 1
            return
        self.last_sent_handshake = now
        ctx = self._ctx
        self._release_handshake_index()
        index = ctx.index.new_index(self)
        timestamp = crypto.tai64n(ctx.wallclock())
        try:
            msg = self.handshake.create_initiation(index, timestamp, ctx.rng(32))
        except HandshakeError as e:
            ctx.index.release(index)
            ctx.counters[e.reason] += 1
            return
        msg = self.cookies.add_macs(msg, now)
        self.timers.on_any_authenticated_packet_traversal(now, self.persistent_keepalive)
        self.timers.on_any_authenticated_packet_sent()
        out.datagrams.append((msg, endpoint))
        self.tx_bytes += len(msg)
        self.timers.on_handshake_initiated(now, self._jitter())

    def fail_over(self, addr: Address, now: float, out: Output) -> bool:
        """Transport data for a session unknown here came from ``addr``, where the fleet saw
        this peer: its session is with another gateway (a floating address moved here, say),
        and a stock client would wait ~15 s before it handshakes again. Point the endpoint
        there and initiate at once; whether it did. At most once per REKEY_TIMEOUT, so
        spoofed sources cannot make us spray initiations; never while the peer's session
        here is alive (an authenticated datagram within KEEPALIVE_TIMEOUT + REKEY_TIMEOUT),
        so a datagram spoofed from a stale endpoint cannot point a live peer away."""
        if now < self.last_sent_handshake + REKEY_TIMEOUT:
            return False
        if now < self.last_received + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT:
            return False
        self._set_endpoint(addr, out)
        self._initiate(now, out, is_retry=False)
        return True

    def receive_initiation(
        self, opened: OpenedInitiation, addr: Address, now: float, out: Output
    ) -> None:
        """An initiation whose static key is this peer's: verify it and answer."""
        ctx = self._ctx
        try:
            self.handshake.consume_initiation(opened, now)
        except HandshakeError as e:
            ctx.counters[e.reason] += 1
            return
        self.timers.on_any_authenticated_packet_traversal(now, self.persistent_keepalive)
        self.timers.on_any_authenticated_packet_received()
        self._set_endpoint(addr, out)
        self.rx_bytes += INITIATION_LEN

        self.last_sent_handshake = now
        self._release_handshake_index()
        index = ctx.index.new_index(self)
        try:
            msg = self.handshake.create_response(index, ctx.rng(32))
        except HandshakeError as e:
            ctx.index.release(index)
            ctx.counters[e.reason] += 1
            return
        msg = self.cookies.add_macs(msg, now)
        keypair = self._new_keypair(now)
        ctx.index.bind_keypair(index, self, keypair)
        # Responder: the new session waits in `next` until the initiator uses it.
        self._drop(self.next)
        self.next = keypair
        self._drop(self.previous)
        self.previous = None
        self.timers.on_session_derived(now)
        self.timers.on_any_authenticated_packet_traversal(now, self.persistent_keepalive)
        self.timers.on_any_authenticated_packet_sent()
        out.datagrams.append((msg, addr))
        self.tx_bytes += len(msg)

    def receive_response(self, msg: Response, addr: Address, now: float, out: Output) -> None:
        ctx = self._ctx
        try:
            self.handshake.consume_response(msg)
        except HandshakeError as e:
            ctx.counters[e.reason] += 1
            return
        self._set_endpoint(addr, out)
        self.rx_bytes += RESPONSE_LEN
        self.timers.on_any_authenticated_packet_traversal(now, self.persistent_keepalive)
        self.timers.on_any_authenticated_packet_received()
        keypair = self._new_keypair(now)
        ctx.index.bind_keypair(keypair.local_index, self, keypair)
        # Initiator: the new session is confirmed by the response, use it at once.
        old_previous = self.previous
        if self.next is not None:
            self.previous = self.next
            self.next = None
            self._drop(self.current)
        else:
            self.previous = self.current
        self._drop(old_previous)
        self.current = keypair
        self.timers.on_session_derived(now)
        self._handshake_complete(out, initiator=True)
        self._send_keepalive(now, out)

    def receive_cookie_reply(self, reply: CookieReply, now: float) -> bool:
        return self.cookies.consume_reply(reply, now)

    def _new_keypair(self, now: float) -> Keypair:
        keys = self.handshake.derive_session()
        return Keypair(
            keys.send,
            keys.receive,
            is_initiator=keys.is_initiator,
            local_index=keys.local_index,
            remote_index=keys.remote_index,
            created=now,
        )

    def _handshake_complete(self, out: Output, *, initiator: bool) -> None:
        self.timers.on_handshake_complete()
        self.last_handshake_time = self._ctx.wallclock()
        self.handshakes += 1
        out.events.append(HandshakeCompleted(self, initiator))

    def _release_handshake_index(self) -> None:
        if self.handshake.local_index:
            self._ctx.index.release(self.handshake.local_index)
            self.handshake.local_index = 0

    def _drop(self, kp: Keypair | None) -> None:
        if kp is not None:
            self._ctx.index.release(kp.local_index)
            kp.wipe()

    # --- decapsulate ---------------------------------------------------------------------

    def receive_transport(
        self, kp: Keypair, counter: int, datagram: bytes, addr: Address, now: float, out: Output
    ) -> None:
        """A type-4 datagram addressed to one of this peer's keypairs."""
        ctx = self._ctx
        if now - kp.created > REJECT_AFTER_TIME:
            ctx.counters["expired_keypair"] += 1
            return
        view = ctx.cipher.open(kp.receive_key, counter, datagram)
        if view is None:
            ctx.counters["decrypt_failed"] += 1
            return
        if not kp.replay.check_and_set(counter):
            ctx.counters["replay"] += 1
            return
        # Authenticated and fresh: only now may the limits spend the peer's usage or tokens.
        if self.limited and self.rx_bytes + self.tx_bytes >= self.usage_limit:
            self._drop_at_limit(out)
            return
        size = len(view)
        # Copy the packet out before anything else reuses the cipher's scratch buffer.
        packet = self._inner_packet(view) if size else None

        self._set_endpoint(addr, out)
        self.rx_bytes += len(datagram)
        self.rx_packets += 1
        self.last_received = now
        if kp is self.next:
            self._confirm_next(now, out)
        self._keep_key_fresh_receiving(now, out)
        timers = self.timers
        if self.persistent_keepalive:
            timers.persistent_keepalive = now + self.persistent_keepalive
        timers.new_handshake = None  # any authenticated packet received
        if size:
            timers.on_data_received(now)
        if self.limited:
            if self.rx_bytes + self.tx_bytes >= self._usage_mark:
                self._mark_reached(out)
            bucket = self.rate_up
            if packet is not None and bucket is not None and not bucket.take(len(packet), now):
                ctx.counters["rate_limited"] += 1
                return
        if packet is not None:
            out.packets.append(packet)

    def _inner_packet(self, view: memoryview) -> bytes | None:
        """The IP packet without padding, if well-formed and from an allowed source."""
        ctx = self._ctx
        size = len(view)
        version = view[0] >> 4
        if version == 4:
            if size < _IPV4_HEADER:
                ctx.counters["malformed_inner"] += 1
                return None
            length = (view[2] << 8) | view[3]
            if not _IPV4_HEADER <= length <= size:
                ctx.counters["malformed_inner"] += 1
                return None
            source = bytes(view[12:16])
        elif version == 6:
            if size < _IPV6_HEADER:
                ctx.counters["malformed_inner"] += 1
                return None
            length = ((view[4] << 8) | view[5]) + _IPV6_HEADER
            if length > size:
                ctx.counters["malformed_inner"] += 1
                return None
            source = bytes(view[8:24])
        else:
            ctx.counters["malformed_inner"] += 1
            return None
        if not self._source_allowed(self, source):
            ctx.counters["spoofed_source"] += 1
            return None
        return bytes(view[:length])

    def _confirm_next(self, now: float, out: Output) -> None:
        """Responder: the initiator used the new session, so it becomes current."""
        old_previous = self.previous
        self.previous = self.current
        self._drop(old_previous)
        self.current = self.next
        self.next = None
        self._handshake_complete(out, initiator=False)
        self._send_staged(now, out)

    def _keep_key_fresh_receiving(self, now: float, out: Output) -> None:
        if self.timers.sent_last_minute_handshake:
            return
        kp = self.current
        if kp is not None and kp.is_initiator and now - kp.created > REKEY_BEFORE_REJECT_RECEIVING:
            self.timers.sent_last_minute_handshake = True
            self._initiate(now, out, is_retry=False)

    def _set_endpoint(self, addr: Address, out: Output) -> None:
        if addr != self.endpoint:
            old = self.endpoint
            self.endpoint = addr
            out.events.append(EndpointChanged(self, old, addr))

    # --- timers --------------------------------------------------------------------------

    def tick(self, now: float, out: Output) -> None:
        """Act on every timer due at ``now``."""
        timers = self.timers
        for timer in timers.expired(now):
            if timer is Timer.RETRANSMIT_HANDSHAKE:
                if timers.handshake_attempts > MAX_TIMER_HANDSHAKES:
                    self._give_up(now, out)
                else:
                    timers.handshake_attempts += 1
                    self._initiate(now, out, is_retry=True)
            elif timer is Timer.SEND_KEEPALIVE:
                self._send_keepalive(now, out)
                if timers.need_another_keepalive:
                    timers.need_another_keepalive = False
                    timers.send_keepalive = now + KEEPALIVE_TIMEOUT
            elif timer is Timer.NEW_HANDSHAKE:
                # We sent data and heard nothing for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT.
                self._initiate(now, out, is_retry=False)
            elif timer is Timer.ZERO_KEY_MATERIAL:
                self.zero_key_material()
                out.events.append(SessionExpired(self))
            elif timer is Timer.PERSISTENT_KEEPALIVE and self.persistent_keepalive:
                self._send_keepalive(now, out)

    def _give_up(self, now: float, out: Output) -> None:
        self.timers.send_keepalive = None
        if self.staged:
            self._ctx.counters["staged_dropped"] += len(self.staged)
            self.staged.clear()
        if self.timers.zero_key_material is None:
            self.timers.zero_key_material = now + ZERO_KEYS_AFTER
        out.events.append(HandshakeFailed(self))

    def zero_key_material(self) -> None:
        """Erase every session and the handshake in progress; drop queued packets."""
        for kp in (self.previous, self.current, self.next):
            self._drop(kp)
        self.previous = self.current = self.next = None
        self._release_handshake_index()
        self.handshake.clear()
        self.staged.clear()

    def change_identity(self, identity: StaticIdentity) -> None:
        """The device's static key changed: every session and the handshake in progress end
        (keys erased), since the peer derived them from the old key. Queued packets stay and
        leave after the next handshake, which may start at once (no REKEY_TIMEOUT wait)."""
        handshake_index = self.handshake.local_index
        self.handshake.change_identity(identity)  # first: it raises before changing anything
        if handshake_index:
            self._ctx.index.release(handshake_index)
        self._end_sessions()

    def change_preshared_key(self, preshared_key: bytes | None) -> None:
        """A new preshared key, in place: counters and timers go on, the sessions and the
        handshake in progress end (keys erased; they came from the old key). Queued packets
        stay and leave after the next handshake, which may start at once."""
        self._release_handshake_index()
        self.handshake.change_preshared_key(preshared_key)
        self.config = attrs.evolve(self.config, preshared_key=preshared_key)
        self._end_sessions()
        if self.persistent_keepalive:
            self.timers.persistent_keepalive = float("-inf")  # the handshake at once, as wg(8)

    def _end_sessions(self) -> None:
        for kp in (self.previous, self.current, self.next):
            self._drop(kp)
        self.previous = self.current = self.next = None
        self.last_sent_handshake = float("-inf")

    def set_blocked(self, blocked: bool) -> None:
        """See Device.set_blocked."""
        self.blocked = blocked
        if blocked:
            self.zero_key_material()
            self.timers.stop_all()
            self.last_sent_handshake = float("-inf")
        elif self.persistent_keepalive:
            self.timers.persistent_keepalive = float("-inf")  # the handshake at once, as wg(8)

    def remove(self) -> None:
        self.zero_key_material()
        self.timers.stop_all()
        self.removed = True
