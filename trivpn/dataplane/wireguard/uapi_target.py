"""The `wg` adapter: what `wg show` reads (a snapshot) and what `wg set` / `wg syncconf`
apply, checked whole before anything changes. The one place errors become errno values."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Sequence

import attrs

from trivpn.dataplane.wireguard.interface import (
    InterfaceSettingError,
    InterfaceSettings,
    Refusal,
)
from trivpn.dataplane.wireguard.peers import KEEP, PeerSet, PeerUpdate
from trivpn.proto import uapi
from trivpn.proto.ip import IPNetwork
from trivpn.proto.wireguard import Peer
from trivpn.proto.wireguard.crypto import CryptoError, dh

log = logging.getLogger("trivpn")


@attrs.frozen
class PeerChange:
    """A peer as a `wg set` left it: ``removed``, or present with these settings."""

    public_key: bytes
    removed: bool
    preshared_key: bytes | None = attrs.field(default=None, repr=False)
    allowed_ips: tuple[IPNetwork, ...] = ()
    endpoint: tuple[str, int] | None = None
    persistent_keepalive: int | None = None


PeerChangeHandler = Callable[[Sequence[PeerChange]], None]

_ERRNO = {
    Refusal.PORT_IN_USE: errno.EADDRINUSE,
    Refusal.NOT_PERMITTED: errno.EPERM,
    Refusal.KEY_REQUIRED: errno.EOPNOTSUPP,
    Refusal.SYSTEM: errno.EIO,
}


def uapi_error(error: InterfaceSettingError) -> uapi.UapiError:
    """The errno `wg` is answered with: the kernel's own when it refused, as wireguard-go
    answers, else the reason's."""
    cause = error.__cause__
    code = cause.errno if isinstance(cause, OSError) and cause.errno else _ERRNO[error.reason]
    return uapi.UapiError(code, str(error))


class UapiTarget:
    """trivpn.proto.uapi.Target for the WireGuard front."""

    def __init__(
        self, peers: PeerSet, interface: InterfaceSettings, wake_timers: Callable[[], None]
    ) -> None:
        self._peers = peers
        self._device = peers.device
        self._interface = interface
        self._wake_timers = wake_timers
        # told, after each `wg set`, which peers it changed; must not block
        self.on_peer_change: PeerChangeHandler | None = None

    def uapi_snapshot(self) -> uapi.DeviceSnapshot:
        return attrs.evolve(
            self.uapi_device_snapshot(),
            peers=tuple(_peer_snapshot(peer) for peer in self._device),
        )

    def uapi_device_snapshot(self) -> uapi.DeviceSnapshot:
        return uapi.DeviceSnapshot(
            private_key=self._device.identity.private_key,
            listen_port=self._interface.listen_port,
            fwmark=self._interface.fwmark,
            peers=(),
        )

    def uapi_peer_keys(self) -> list[bytes]:
        return list(self._device.peers)

    def uapi_peer_snapshot(self, public_key: bytes) -> uapi.PeerSnapshot | None:
        peer = self._device.peers.get(public_key)
        return None if peer is None else _peer_snapshot(peer)

    def uapi_apply(self, operations: Sequence[uapi.Operation]) -> None:
        """Apply a `wg set`: everything checked first, so that a refusal changes nothing."""
        try:
            for op in operations:
                self._check(op)
            touched: dict[bytes, None] = {}  # keys of the peers changed, in order
            losers: dict[bytes, None] = {}  # keys of the peers a network was taken from
            for op in operations:
                changed, took_from = self._apply(op)
                touched.update(dict.fromkeys(changed))
                losers.update(dict.fromkeys(took_from))
        except InterfaceSettingError as e:
            raise uapi_error(e) from None
        # A peer that lost a network to another changed too, and is reported first: a
        # registry must free the network before it can give it to the other.
        ordered = [*losers, *(key for key in touched if key not in losers)]
        self._wake_timers()
        if ordered and self.on_peer_change is not None:
            self.on_peer_change([self._change_of(key) for key in ordered])

    def _change_of(self, public_key: bytes) -> PeerChange:
        peer = self._device.peers.get(public_key)
        if peer is None:
            return PeerChange(public_key, removed=True)
        return PeerChange(
            public_key,
            removed=False,
            preshared_key=peer.preshared_key,
            allowed_ips=peer.allowed_ips,
            endpoint=peer.endpoint,
            persistent_keepalive=peer.persistent_keepalive or None,  # 0 is off too
        )

    def _check(self, op: uapi.Operation) -> None:
        if isinstance(op, uapi.SetPrivateKey):
            # All zeros asks to remove the key (a file without PrivateKey): a server needs one.
            if op.private_key == uapi.ZERO_KEY:
                raise InterfaceSettingError(
                    Refusal.KEY_REQUIRED, "the private key cannot be removed"
                )
        elif isinstance(op, uapi.SetListenPort):
            self._interface.check_listen_port(op.port)
        elif isinstance(op, uapi.SetFwmark):
            self._interface.check_fwmark(op.mark)
        elif isinstance(op, uapi.ConfigurePeer):
            key = op.public_key
            device = self._device
            if key not in device.peers and key != device.public_key:
                try:
                    dh(device.identity.private_key, key)
                except CryptoError:
                    raise uapi.UapiError(errno.EINVAL, "unusable public key") from None
            for network in op.allowed_ips:
                owner = self._peers.routes.foreign_owner(network)
                if owner is not None:
                    raise uapi.UapiError(errno.EADDRINUSE, f"{network} is routed to {owner!r}")

    def _apply(self, op: uapi.Operation) -> tuple[list[bytes], tuple[bytes, ...]]:
        """Apply one operation; the keys of the peers it changed, and of those it took a
        network from."""
        peers = self._peers
        if isinstance(op, uapi.RemoveAllPeers):
            removed = list(self._device.peers)
            for public_key in removed:
                peers.remove(public_key)
            log.info("wireguard: all peers removed through the UAPI")
            return removed, ()
        if isinstance(op, uapi.RemovePeer):
            peer = self._device.peers.get(op.public_key)
            if peer is None:
                return [], ()
            peers.remove(op.public_key)
            log.info(
                "wireguard: peer %s removed through the UAPI",
                peer.label,
            )
            return [op.public_key], ()
        if isinstance(op, uapi.ConfigurePeer):
            return self._configure_peer(op)
        if isinstance(op, uapi.SetPrivateKey):
            self._interface.set_private_key(op.private_key)
        elif isinstance(op, uapi.SetListenPort):
            self._interface.set_listen_port(op.port)
        elif isinstance(op, uapi.SetFwmark):
            self._interface.set_fwmark(op.mark)
        # A peer removed for having the new own key is not reported: the key change lasts
        # until a restart, after which that peer (kept in the registry) is valid again.
        return [], ()

    def _configure_peer(self, op: uapi.ConfigurePeer) -> tuple[list[bytes], tuple[bytes, ...]]:
        device = self._device
        if op.public_key == device.public_key:
            return [], ()  # ignored, as wireguard-go does
        peer = device.peers.get(op.public_key)
        if peer is None and op.update_only:
            return [], ()
        allowed_ips = None
        if op.replace_allowed_ips or op.allowed_ips:
            kept = () if op.replace_allowed_ips or peer is None else peer.allowed_ips
            allowed_ips = kept + op.allowed_ips
        psk = op.preshared_key
        result = self._peers.update(
            PeerUpdate(
                public_key=op.public_key,
                preshared_key=KEEP if psk is None else None if psk == uapi.ZERO_KEY else psk,
                endpoint=op.endpoint,
                persistent_keepalive=op.persistent_keepalive,
                allowed_ips=allowed_ips,
            )
        )
        peer = device.peers[op.public_key]
        if result.outcome == "added":
            log.info(
                "wireguard: peer %s added through the UAPI (allowed ips %s)",
                peer.label,
                ", ".join(map(str, peer.allowed_ips)) or "none",
            )
        elif result.outcome == "changed":
            # `wg syncconf` restates every peer: only a real change is worth a line.
            log.info(
                "wireguard: peer %s changed through the UAPI",
                peer.label,
            )
        changed = [op.public_key] if result.outcome is not None else []
        return changed, result.took_from


def _peer_snapshot(peer: Peer) -> uapi.PeerSnapshot:
    return uapi.PeerSnapshot(
        public_key=peer.public_key,
        preshared_key=peer.preshared_key,
        endpoint=peer.endpoint,
        last_handshake_time=peer.last_handshake_time,
        rx_bytes=peer.rx_bytes,
        tx_bytes=peer.tx_bytes,
        persistent_keepalive=peer.persistent_keepalive,
        allowed_ips=peer.allowed_ips,
    )
