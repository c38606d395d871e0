"""The interface's own settings at runtime (`wg set` private-key, listen-port, fwmark).

Like wireguard-go's, they are runtime state: nothing is saved, a restart (or a new process)
takes the config file's values again, and the log says which key keeps them. A refusal is an
InterfaceSettingError, with nothing changed; the `wg` adapter turns it into an errno.
"""

from __future__ import annotations

import enum
import errno
import logging
from collections.abc import Callable

from trivpn.dataplane.wireguard.io_protocols import UdpSocket
from trivpn.dataplane.wireguard.peers import PeerSet
from trivpn.proto.wireguard import encode_key

log = logging.getLogger("trivpn")


class Refusal(enum.Enum):
    """Why a setting was refused."""

    PORT_IN_USE = enum.auto()
    NOT_PERMITTED = enum.auto()  # e.g. SO_MARK without CAP_NET_ADMIN
    KEY_REQUIRED = enum.auto()  # a server cannot do without a private key
    SYSTEM = enum.auto()  # the kernel refused for another reason (the cause says which)


class InterfaceSettingError(Exception):
    """A setting refused, nothing changed. The message is for the log (no secrets); when the
    kernel refused, the OSError is the ``__cause__``."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


_REFUSAL_OF_ERRNO = {
    errno.EADDRINUSE: Refusal.PORT_IN_USE,
    errno.EPERM: Refusal.NOT_PERMITTED,
    errno.EACCES: Refusal.NOT_PERMITTED,
}


class InterfaceSettings:
    def __init__(self, sock: UdpSocket, peers: PeerSet) -> None:
        self.sock = sock
        self._peers = peers
        self._device = peers.device

    @property
    def listen_port(self) -> int:
        port: int = self.sock.sock.getsockname()[1]
        return port

    @property
    def fwmark(self) -> int:
        """The SO_MARK of the listening socket (0: none), as `wg show` reports it."""
        return self.sock.fwmark

    @property
    def public_key(self) -> str:
        return encode_key(self._device.public_key)

    def set_private_key(self, private_key: bytes) -> bool:
        """A new static key (wireguard-go's SetPrivateKey): every peer's sessions end, a peer
        with the new own public key is removed; whether it changed (the same key: no-op)."""
        device = self._device
        new_public = device.identity.from_private_key(private_key).public_key
        mirror = device.peers.get(new_public)
        if mirror is not None:  # (never the same key: the device has no peer with its own)
            self._peers.remove(new_public)  # here, so that its routes go too
            log.info(
                "wireguard: peer %s removed: it has the new own public key",
                mirror.label,
            )
        if not device.set_private_key(private_key):
            return False
        log.info(
            "wireguard: private key changed, new public key %s (peers must be given it; "
            "every session starts over); it lasts until a restart: to keep it, write the key "
            "to [wireguard] private_key_file (or private_key)",
            self.public_key,
        )
        return True

    def check_listen_port(self, port: int) -> None:
        """InterfaceSettingError if ``set_listen_port(port)`` would be refused."""
        # 0 asks for "any port" (wg setconf/syncconf send it for a file without ListenPort):
        # the current one is such a port.
        if port not in (0, self.listen_port):
            _change(lambda: self.sock.check_rebind(port), f"listen on port {port}")

    def set_listen_port(self, port: int) -> None:
        """Move the UDP socket to ``port``; 0 or the current port keep the socket (a server's
        clients know its port: wireguard-go would rebind to a random one for 0). Sessions
        and endpoints stay; peers roam to the new port with our next packet."""
        old = self.listen_port
        if port in (0, old):
            return
        _change(lambda: self.sock.rebind(port), f"listen on port {port}")
        log.info(
            "wireguard: listening on port %d instead of %d until a restart; to keep it, "
            "set the port of [wireguard] listen",
            port,
            old,
        )

    def check_fwmark(self, mark: int) -> None:
        """InterfaceSettingError if ``set_fwmark(mark)`` would be refused."""
        if mark != self.fwmark:
            _change(lambda: self.sock.check_mark(mark), "set the fwmark")

    def set_fwmark(self, mark: int, *, from_config: bool = False) -> None:
        """SO_MARK on the UDP socket (0 clears it); it moves with the socket to a new port.
        ``from_config``: a reload's, which the file keeps (else `wg set`'s, which it does not)."""
        if mark == self.fwmark:
            return
        _change(lambda: self.sock.set_mark(mark), "set the fwmark")
        shown = f"{mark:#x}" if mark else "off"
        if from_config:
            log.info("wireguard: fwmark %s", shown)
        else:
            log.info(
                "wireguard: fwmark %s until a restart; to keep it, set [wireguard] fwmark", shown
            )


def _change(change: Callable[[], None], what: str) -> None:
    """Run a socket change (or its dry run); the kernel's refusal becomes ours."""
    try:
        change()
    except OSError as e:
        reason = _REFUSAL_OF_ERRNO.get(e.errno or 0, Refusal.SYSTEM)
        raise InterfaceSettingError(reason, f"cannot {what}: {e.strerror or e}") from e
