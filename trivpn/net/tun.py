"""The TUN device: /dev/net/tun, non-blocking; optionally with TCP offloads.

With ``offload=True`` the device carries a virtio-net header (IFF_VNET_HDR) and
``write_batch`` merges consecutive TCP segments of a flow into one GSO frame
(``offload.coalesce``), so the kernel forwards and delivers a burst once instead of per
packet. Reads stay one packet each: with TSO enabled for reads (TUNSETOFFLOAD) the kernel
would hand us 64 KiB frames, but segmenting and checksumming them in Python measured slower
than letting the kernel segment before the TUN (tools/bench, ToyVPN: ~0.65 vs ~1.2 Gbit/s).
A read that does carry a GSO frame or a checksum to finish is still handled (``segment``).

The device lives as long as its fd (it is not made persistent), so a killed server leaves
no interface behind. Reads and writes never block: the trio layer waits for readability
itself and then drains a bounded batch here without awaiting.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Sequence
from types import TracebackType

from trivpn.net import offload as offload_mod

TUN_PATH = "/dev/net/tun"

_TUNSETIFF = 0x400454CA  # _IOW('T', 202, int)
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000  # plain IP packets, no 4-byte packet-information prefix
_IFNAMSIZ = 16  # includes the terminating NUL
_IFREQ = struct.Struct(f"{_IFNAMSIZ}sH22x")  # struct ifreq: name, flags, rest of the union

# A TUN read with a buffer shorter than the packet truncates it silently; no IP packet
# (and so no TUN MTU) exceeds 65535 bytes.
_READ_SIZE = 65535


class TunError(Exception):
    """The TUN device could not be created or has failed."""


class Tun:
    """An open TUN device (IFF_TUN | IFF_NO_PI) with its fd in non-blocking mode."""

    name: str
    fd: int
    dropped_writes: int

    def __init__(self, fd: int, name: str, *, vnet_hdr: bool = False) -> None:
        """Wrap an fd that is already attached to a TUN device; ``open`` is the usual way."""
        self.fd = fd
        self.name = name
        self.dropped_writes = 0
        self.vnet_hdr = vnet_hdr

    @classmethod
    def open(cls, name: str, *, offload: bool = False) -> Tun:
        """Create the TUN device ``name`` (a kernel pattern such as ``tun%d`` works too)."""
        raw_name = name.encode()
        if len(raw_name) >= _IFNAMSIZ:
            raise TunError(
                f"cannot create TUN {name!r}: interface names are at most {_IFNAMSIZ - 1} bytes"
            )
        if b"\0" in raw_name:
            raise TunError(f"cannot create TUN {name!r}: interface names cannot contain NUL")
        try:
            fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise _open_error(name, exc) from exc
        try:
            flags = _IFF_TUN | _IFF_NO_PI | (offload_mod.IFF_VNET_HDR if offload else 0)
            answer = fcntl.ioctl(fd, _TUNSETIFF, _IFREQ.pack(raw_name, flags))
            if offload:
                hdr_len = struct.pack("i", offload_mod.VNET_HDR_LEN)
                fcntl.ioctl(fd, offload_mod.TUNSETVNETHDRSZ, hdr_len)
        except OSError as exc:
            os.close(fd)
            raise _open_error(name, exc) from exc
        kernel_name = _IFREQ.unpack(answer)[0].split(b"\0", 1)[0]
        return cls(fd, kernel_name.decode(errors="replace"), vnet_hdr=offload)

    def fileno(self) -> int:
        return self.fd

    def read_batch(self, max_packets: int = 64) -> list[bytes]:
        """Up to ``max_packets`` packets, stopping early when the fd would block.

        Raises TunError when the device fails (or is closed) and nothing was read; packets
        read before a failure are returned first, and the next call reports the failure.
        """
        packets: list[bytes] = []
        read_size = _READ_SIZE + offload_mod.VNET_HDR_LEN if self.vnet_hdr else _READ_SIZE
        for _ in range(max_packets):
            try:
                data = os.read(self.fd, read_size)
            except BlockingIOError:
                break
            except OSError as exc:
                if packets:
                    break
                raise TunError(f"reading TUN {self.name!r} failed: {exc.strerror}") from exc
            if not data:
                break
            if not self.vnet_hdr:
                packets.append(data)
            elif data[1] == 0 and not data[0] & offload_mod.VIRTIO_NET_HDR_F_NEEDS_CSUM:
                # no GSO and no checksum to finish: the common case
                packets.append(data[offload_mod.VNET_HDR_LEN :])
            else:
                packets.extend(offload_mod.segment(data))  # a malformed frame: none
        return packets

    def write_batch(self, packets: Sequence[bytes], *, verify_checksums: bool = True) -> int:
        """Write packets in order (merged into GSO frames where possible); returns drops.

        ``verify_checksums=False`` skips re-checking TCP checksums before merging: right for
        packets whose integrity a cipher's tag has already proven.
        """
        if not self.vnet_hdr:
            return sum(not self.write(p) for p in packets)
        dropped = 0
        for iov in offload_mod.coalesce(packets, verify_checksums=verify_checksums):
            try:
                os.writev(self.fd, iov)
            except OSError:
                dropped += len(iov) - 2 if iov[0] is not offload_mod.ZERO_HDR else 1
        self.dropped_writes += dropped
        return dropped

    def write(self, packet: bytes | bytearray | memoryview) -> bool:
        """Hand one IP packet to the kernel; False (and counted) when it was dropped.

        A drop is not an error worth raising for: the kernel refuses malformed packets
        (EINVAL), a full queue (EAGAIN, ENOBUFS) or a device going away (EIO, EBADF), and
        the sender's transport retransmits either way.
        """
        try:
            if self.vnet_hdr:
                os.writev(self.fd, (offload_mod.ZERO_HDR, packet))
            else:
                os.write(self.fd, packet)
        except OSError:
            self.dropped_writes += 1
            return False
        return True

    def close(self) -> None:
        """Close the fd, which removes the device; safe to call more than once."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> Tun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Tun {self.name!r} fd={self.fd}>"


def _open_error(name: str, exc: OSError) -> TunError:
    reason = exc.strerror or str(exc)
    # TUNSETIFF answers EINVAL for a name another kind of device has, EBUSY for a TUN that
    # another process holds: say so, not "needs CAP_NET_ADMIN", which root already has
    if exc.errno in (errno.EINVAL, errno.EBUSY) and (holder := _name_taken_by(name)):
        return TunError(f"cannot create TUN {name!r}: the name is taken by {holder}")
    return TunError(f"cannot create TUN {name!r}: {reason}; needs CAP_NET_ADMIN and {TUN_PATH}")


def _name_taken_by(name: str) -> str | None:
    """The device that already has ``name``, described; None when there is none."""
    from trivpn.net import link  # pyroute2, on this error path only

    try:
        kind = link.link_kind(name)
    except (OSError, link.LinkError):
        return None
    if kind is None:
        return None
    if kind == "tun":
        return "a TUN or TAP device already in use (another trivpn?)"
    if kind == "":
        return "an existing device (not a TUN); choose another name"
    return f"a {kind} device (not a TUN); choose another name"
