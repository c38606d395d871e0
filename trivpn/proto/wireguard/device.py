"""A WireGuard device: our static key, many peers, and the routing of every UDP datagram.

The order of checks on a received datagram is what keeps a flood cheap: the length and
type first, then for handshakes mac1 (one BLAKE2s, no DH), then the load decision and
mac2/cookie, then the per-IP rate limit, and only then the first DH. Transport data skips
all of it: index lookup, one AEAD open, the replay window.
"""

from __future__ import annotations

import heapq
import hmac
import itertools
import math
import struct
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Final

from ..token_bucket import TokenBucket
from . import crypto, messages
from .cookie import (
    Address,
    CookieChecker,
    HandshakeRateLimiter,
    LoadMonitor,
    RandomBytes,
    address_bytes,
)
from .noise import HandshakeError, StaticIdentity, open_initiation
from .peer import (
    AllowedIps,
    DeviceContext,
    IndexTable,
    Output,
    Peer,
    PeerConfig,
    StaticAllowedIps,
)

# The timer heap is rebuilt from the schedule when stale entries make it this much larger.
_HEAP_SLACK_FACTOR: Final = 2
_HEAP_SLACK_MIN: Final = 64

# Peers added at once (a server starting with thousands of keepalive peers) would all send
# their first handshake in one tick. Up to a crowd of them start at once, as wg(8) does;
# a larger crowd is spread over this many seconds (at most each peer's keepalive interval).
FIRST_TIMER_SPREAD: Final = 2.0
FIRST_TIMER_CROWD: Final = 64

# Handshake messages per second (with a valid mac1) above which cookies are demanded.
# A DH costs tens of microseconds here and a handshake needs four, so a few hundred per
# second is still a small share of one core.
DEFAULT_UNDER_LOAD_RATE: Final = 500.0

_TRANSPORT: Final = struct.Struct("<IIQ")
_HANDSHAKE_SENDER: Final = struct.Struct("<I")


def _bucket(bucket: TokenBucket | None, bps: int | None, now: float) -> TokenBucket | None:
    if bps is None:
        return None
    if bucket is not None and bucket.rate == bps / 8:
        return bucket
    return TokenBucket(bps, now)


# (deadline, sequence, peer): one peer's earliest timer as scheduled in the heap.
_Entry = tuple[float, int, Peer]


class Device:
    """The sans-IO WireGuard device. See the package docstring for how to drive it.

    ``rng`` (random bytes: key pairs, indices, cookie secrets) and ``wallclock`` (epoch
    seconds, for the TAI64N timestamp of initiations) come from the caller: proto reads no OS.
    """

    def __init__(
        self,
        private_key: bytes,
        *,
        rng: RandomBytes,
        wallclock: Callable[[], float],
        under_load_rate: float = DEFAULT_UNDER_LOAD_RATE,
        mtu: int | None = None,
        allowed_ips: AllowedIps | None = None,
        first_timer_spread: float = 0.0,
    ) -> None:
        self.identity = StaticIdentity.from_private_key(private_key)
        self.counters: Counter[str] = Counter()
        self._index = IndexTable(rng)
        self._ctx = DeviceContext(
            identity=self.identity,
            rng=rng,
            wallclock=wallclock,
            counters=self.counters,
            cipher=crypto.TransportCipher(),
            index=self._index,
            allowed_ips=StaticAllowedIps() if allowed_ips is None else allowed_ips,
            mtu=mtu,
        )
        self._checker = CookieChecker(self.identity.public_key, rng)
        self._load = LoadMonitor(under_load_rate)
        self._ratelimiter = HandshakeRateLimiter()
        self._peers: dict[bytes, Peer] = {}
        # Timers with thousands of peers: next_deadline() is asked after every batch and tick()
        # runs at every keepalive, so neither may walk all peers. Every entry point that may
        # change a peer's timers adds it to _touched; a flush recomputes those peers' earliest
        # timer into _scheduled (peer -> its live heap entry). Entries of _heap that are not
        # their peer's live entry (the deadline moved, the peer went) are stale and skipped.
        self._touched: set[Peer] = set()
        self._scheduled: dict[Peer, _Entry] = {}
        self._heap: list[_Entry] = []
        self._sequence = itertools.count()  # tie-break: a Peer is never compared
        # Due peers run in the order they were added, as a walk over _peers did: the Output
        # and the draws from the shared rng then do not depend on the deadlines' order.
        self._added = itertools.count()
        self._rank: dict[Peer, int] = {}
        # Added peers whose first timer (due at once) has not run: when they are a crowd, each
        # is put off at its first due tick by a random 0..first_timer_spread s instead of run.
        self._first_timer_spread = first_timer_spread
        self._unspread: set[Peer] = set()
        # A fleet's endpoints (endpoint -> public key, as the gateways sharing a registry last
        # saw them): data for an unknown session from one of our peers' means its session is
        # with another gateway, and we initiate toward it (`Peer.fail_over`).
        self.fleet_endpoints: Mapping[Address, bytes] = {}

    def __repr__(self) -> str:
        return f"Device(peers={len(self._peers)})"

    @property
    def public_key(self) -> bytes:
        return self.identity.public_key

    @property
    def peers(self) -> Mapping[bytes, Peer]:
        return self._peers

    def __iter__(self) -> Iterator[Peer]:
        return iter(list(self._peers.values()))

    # --- configuration -------------------------------------------------------------------

    def add_peer(self, config: PeerConfig) -> Peer:
        """Add a peer (at runtime too). ValueError for a duplicate or unusable public key."""
        if config.public_key in self._peers:
            raise ValueError(f"peer {config.name or 'with that public key'} already exists")
        if config.public_key == self.identity.public_key:
            raise ValueError("a peer cannot have the device's own public key")
        peer = Peer(config, self._ctx)
        self._peers[config.public_key] = peer
        self._rank[peer] = next(self._added)
        self._touched.add(peer)
        if self._first_timer_spread > 0 and peer.timers.persistent_keepalive == float("-inf"):
            self._unspread.add(peer)
        return peer

    def remove_peer(self, public_key: bytes) -> None:
        """Forget a peer and erase its keys; its indices stop matching at once."""
        peer = self._peers.pop(public_key, None)
        if peer is None:
            raise KeyError("no peer with that public key")
        peer.remove()
        self._touched.discard(peer)
        self._scheduled.pop(peer, None)  # its heap entries are stale from now on
        self._unspread.discard(peer)
        del self._rank[peer]

    def set_private_key(self, private_key: bytes) -> bool:
        """Change our static key at runtime, as wireguard-go's SetPrivateKey does; whether it
        changed (a key that clamps to the current one is a no-op).

        A peer whose public key is the new own key is removed. Every other peer's static-static
        DH is recomputed and its sessions and handshake in progress end, keys erased: the peer
        must learn the new public key, and the next packet either way starts a new handshake.
        mac1 and cookie replies now use the new public key; the old one gets no answer.
        """
        identity = StaticIdentity.from_private_key(private_key)
        if hmac.compare_digest(identity.private_key, self.identity.private_key):
            return False
        if identity.public_key in self._peers:
            self.remove_peer(identity.public_key)
        for peer in self._peers.values():
            peer.change_identity(identity)
            self._touched.add(peer)
        self.identity = identity
        self._ctx.identity = identity
        self._checker = CookieChecker(identity.public_key, self._ctx.rng)
        return True

    def set_preshared_key(self, peer: Peer, preshared_key: bytes | None) -> bool:
        """A new preshared key for ``peer``, in place (its counters go on); its sessions end
        and the next handshake uses the key. Whether it changed."""
        if preshared_key == peer.preshared_key:
            return False
        peer.change_preshared_key(preshared_key)
        self._touched.add(peer)
        return True

    def set_persistent_keepalive(self, peer: Peer, seconds: int | None) -> None:
        """0 or None turns it off; turning it on sends a keepalive at once, as wg(8) does."""
        was_on = bool(peer.persistent_keepalive)
        peer.persistent_keepalive = seconds or None
        if not seconds:
            peer.timers.persistent_keepalive = None
        elif not was_on:
            peer.timers.persistent_keepalive = float("-inf")  # due now
        self._touched.add(peer)

    def set_blocked(self, peer: Peer, blocked: bool) -> bool:
        """Block a peer (its policy says so) or let it back; whether that changed anything.

        Blocking ends its sessions and the handshake in progress (keys erased, queued packets
        dropped) and stops its timers; until unblocked, its initiations get no answer, the
        server initiates nothing toward it and packets to it are dropped (counted "blocked").
        Unblocked, it waits for the peer's own handshake; with a persistent keepalive the
        server starts one at once, as after a new preshared key.
        """
        if peer.blocked == blocked:
            return False
        peer.set_blocked(blocked)
        self._touched.add(peer)
        return True

    def set_usage_limit(
        self, peer: Peer, remaining: int | None, *, warn_remaining: int | None = None
    ) -> None:
        """Let ``peer`` move ``remaining`` more bytes (received plus sent, as rx_bytes +
        tx_bytes count them, handshakes included) from now; None: no limit. QuotaReached is
        raised once when usage reaches the limit, and once before at ``warn_remaining`` bytes
        from now, if given.

        The datagram whose bytes make usage reach the limit still goes (it was in flight:
        received, or passed when it was queued); every later one either way is dropped and
        counted "blocked", checked after authentication on the way in. So usage never passes
        the limit by a datagram or more: rx_bytes + tx_bytes < limit + the largest datagram
        counted (a data packet's padded length + 32), plus the handshake messages (148 or 92
        bytes each) counted before the caller blocks the peer at the QuotaReached event.
        """
        base = peer.rx_bytes + peer.tx_bytes
        limit = math.inf if remaining is None else base + remaining
        mark = math.inf if warn_remaining is None else base + warn_remaining
        peer.set_usage_limit(limit, mark)

    def set_rates(self, peer: Peer, down_bps: int | None, up_bps: int | None, now: float) -> None:
        """Police ``peer``'s traffic at these rates (bits per second of inner IP packets;
        None: unlimited): toward the peer before encryption, from it after authentication.
        A packet over the rate is dropped and counted "rate_limited"; keepalives pass. A
        rate unchanged keeps its bucket (and the tokens in it)."""
        peer.set_rates(_bucket(peer.rate_down, down_bps, now), _bucket(peer.rate_up, up_bps, now))

    # --- the three inputs ----------------------------------------------------------------

    def receive(
        self, datagram: bytes, addr: Address, now: float, out: Output | None = None
    ) -> Output:
        """Any UDP datagram that arrived on the listening socket from ``addr``."""
        if out is None:
            out = Output()
        # Fast path: transport data, checked inline.
        if len(datagram) >= messages.TRANSPORT_MIN_LEN and datagram[0] == 4:
            kind, receiver, counter = _TRANSPORT.unpack_from(datagram)
            if kind == messages.MSG_TRANSPORT:
                entry = self._index.entries.get(receiver)
                if entry is None or entry.keypair is None:
                    self.counters["unknown_index"] += 1
                    fleet_key = self.fleet_endpoints.get(addr)  # the junk path's one probe
                    if fleet_key is not None:
                        self._fail_over(fleet_key, addr, now, out)
                else:
                    entry.peer.receive_transport(entry.keypair, counter, datagram, addr, now, out)
                    self._touched.add(entry.peer)
                return out
        reason = messages.malformed_reason(datagram)  # junk: no exception, no allocation
        if reason is not None:
            self.counters["malformed"] += 1
            self.counters[reason] += 1
            return out
        kind = datagram[0]
        if kind == messages.MSG_COOKIE_REPLY:
            self._receive_cookie_reply(datagram, now)
        elif kind in (messages.MSG_INITIATION, messages.MSG_RESPONSE):
            self._receive_handshake(kind, datagram, addr, now, out)
        return out

    def send(self, peer: Peer, packet: bytes, now: float, out: Output | None = None) -> Output:
        """An IP packet from the TUN that the router assigned to ``peer``."""
        if out is None:
            out = Output()
        if peer.removed:
            self.counters["removed_peer"] += 1
            return out
        if peer.blocked:  # a flag: the policy's decision is made when it changes, not here
            self.counters["blocked"] += 1
            return out
        peer.send(packet, now, out)
        self._touched.add(peer)
        return out

    def tick(self, now: float, out: Output | None = None, *, limit: int | None = None) -> Output:
        """Run the timers due at ``now`` (call it at ``next_deadline()``), of at most ``limit``
        peers (the earliest due): the rest stay due, so ``next_deadline()`` is still ``now``
        and the caller may let others run before the next slice.

        Costs O(log peers) per due peer plus the flush of the peers touched since the last
        call; peers with nothing due are not looked at.
        """
        if out is None:
            out = Output()
        self._flush_touched()
        heap, scheduled = self._heap, self._scheduled
        due: list[Peer] = []
        while heap and heap[0][0] <= now and (limit is None or len(due) < limit):
            entry = heapq.heappop(heap)
            peer = entry[2]
            if scheduled.get(peer) is entry:
                del scheduled[peer]
                due.append(peer)
        if not due:
            return out
        due.sort(key=self._rank.__getitem__)
        # Touched first: should a peer's tick raise, the flush of the next call still
        # schedules every due peer again. A peer's tick changes only its own timers (other
        # peers share just the index table, the counters and the rng), so no other peer
        # can have become due meanwhile.
        self._touched.update(due)
        for peer in due:
            if self._unspread and peer in self._unspread and self._spread_first_timer(peer, now):
                continue
            peer.tick(now, out)
        self._flush_touched()
        return out

    def _spread_first_timer(self, peer: Peer, now: float) -> bool:
        """Put off a new peer's first timer by a random share of the spread (at most its
        keepalive interval) if it starts in a crowd; whether it was put off. A change since
        (a handshake, a new keepalive setting) has made the timer its own: it runs as it is."""
        crowd = len(self._unspread) > FIRST_TIMER_CROWD
        self._unspread.discard(peer)
        if not crowd or peer.timers.persistent_keepalive != float("-inf"):
            return False
        spread = min(self._first_timer_spread, float(peer.persistent_keepalive or 0))
        fraction = int.from_bytes(self._ctx.rng(4), "little") / (1 << 32)
        peer.timers.persistent_keepalive = now + spread * fraction
        return True

    def next_deadline(self) -> float | None:
        """When to call ``tick`` next (None: no timer pending).

        Never later than the earliest timer of any peer. It is exact as long as peers' timers
        change only through this Device's methods (as they do); a timer moved later behind
        its back would make it early, and that tick then runs nothing and reschedules.
        Costs O(peers touched since the last call), plus O(log peers) per stale heap entry
        it discards.
        """
        self._flush_touched()
        heap, scheduled = self._heap, self._scheduled
        while heap and scheduled.get(heap[0][2]) is not heap[0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _flush_touched(self) -> None:
        """Reschedule the touched peers whose earliest timer changed."""
        touched = self._touched
        if not touched:
            return
        scheduled, heap = self._scheduled, self._heap
        for peer in touched:
            if peer.removed:
                continue  # e.g. set_persistent_keepalive on a peer removed before
            deadline = peer.next_deadline()
            entry = scheduled.get(peer)
            if deadline == (entry[0] if entry is not None else None):
                continue  # unchanged: its live entry stays
            if deadline is None:
                del scheduled[peer]
            else:
                entry = (deadline, next(self._sequence), peer)
                scheduled[peer] = entry
                heapq.heappush(heap, entry)
        touched.clear()
        # A busy peer whose deadline moves later with every batch leaves a stale entry each
        # time; a rebuild now and then keeps the heap O(peers), amortized O(1) per push.
        if len(heap) > _HEAP_SLACK_FACTOR * len(scheduled) + _HEAP_SLACK_MIN:
            self._heap = list(scheduled.values())
            heapq.heapify(self._heap)

    def _fail_over(self, public_key: bytes, addr: Address, now: float, out: Output) -> None:
        peer = self._peers.get(public_key)
        if peer is None or peer.blocked:
            return
        if peer.fail_over(addr, now, out):
            self.counters["fleet_failover"] += 1
            self._touched.add(peer)

    # --- handshake messages --------------------------------------------------------------

    def _receive_handshake(
        self, kind: int, datagram: bytes, addr: Address, now: float, out: Output
    ) -> None:
        if not self._checker.check_mac1(datagram):
            self.counters["bad_mac1"] += 1
            return
        if self._load.record(now):
            source = address_bytes(addr)
            if not self._checker.check_mac2(datagram, source, now):
                (sender,) = _HANDSHAKE_SENDER.unpack_from(datagram, 4)
                reply = self._checker.create_reply(datagram, sender, source, now)
                out.datagrams.append((reply, addr))
                self.counters["cookie_sent"] += 1
                return
            if not self._ratelimiter.allow(addr[0], now):
                self.counters["ratelimited"] += 1
                return
        if kind == messages.MSG_INITIATION:
            self._receive_initiation(datagram, addr, now, out)
        else:
            self._receive_response(datagram, addr, now, out)

    def _receive_initiation(self, datagram: bytes, addr: Address, now: float, out: Output) -> None:
        msg = messages.parse_initiation(datagram)
        try:
            opened = open_initiation(self.identity, msg)
        except HandshakeError as e:
            self.counters[e.reason] += 1
            return
        peer = self._peers.get(opened.initiator_static)
        if peer is None:
            self.counters["unknown_peer"] += 1
            return
        if peer.blocked:  # no answer, no endpoint learnt
            self.counters["blocked"] += 1
            return
        peer.receive_initiation(opened, addr, now, out)
        self._touched.add(peer)

    def _receive_response(self, datagram: bytes, addr: Address, now: float, out: Output) -> None:
        msg = messages.parse_response(datagram)
        entry = self._index.entries.get(msg.receiver)
        if entry is None or entry.keypair is not None:
            self.counters["unknown_index"] += 1
            return
        entry.peer.receive_response(msg, addr, now, out)
        self._touched.add(entry.peer)

    def _receive_cookie_reply(self, datagram: bytes, now: float) -> None:
        reply = messages.parse_cookie_reply(datagram)
        entry = self._index.entries.get(reply.receiver)
        if entry is None:
            self.counters["unknown_index"] += 1
            return
        if not entry.peer.receive_cookie_reply(reply, now):
            self.counters["invalid_cookie_reply"] += 1
        self._touched.add(entry.peer)
