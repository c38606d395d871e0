"""recvmmsg(2) through cffi in ABI mode: many datagrams per syscall, into buffers made once.

A junk flood costs the server syscalls and wake-ups, not checks (docs/architecture.md), so
the UDP socket drains a batch of datagrams with one call instead of one recvmsg each. cffi
comes with pynacl and, in ABI mode (``dlopen(None)``: the C library already loaded), needs
no compiler at install. Where it is missing, or the C library has no recvmmsg,
``available()`` is False and trivpn.net.udp keeps its recvmsg loop.

Each entry has its own 64 KiB buffer (a UDP GRO buffer holds up to 64 KiB of segments), a
sockaddr_storage and room for the cmsgs; a datagram's ancillary data comes back as recvmsg's
(level, type, data) triples. Addresses and cmsgs repeat from datagram to datagram (one
client, one local address), so each distinct raw form is decoded once and the same Python
object is handed out again (bounded caches).
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from collections.abc import Sequence
from typing import Any, Final

Addr = tuple[Any, ...]
Ancillary = Sequence[tuple[int, int, bytes]]  # recvmsg's list; here a tuple, shared: read only
Received = tuple[bytes, Ancillary, Addr]

ENTRIES: Final = 32  # datagrams per call: a flood's burst, or a GRO'd bulk burst, in one
SIZE: Final = 65536
CONTROL: Final = 64  # CMSG_SPACE(4) for UDP_GRO + CMSG_SPACE(20) for IPV6_PKTINFO
_NAME: Final = 128  # sizeof(struct sockaddr_storage)
_MSG_TRUNC: Final = 0x20
_MAX_CACHED: Final = 4096  # distinct senders / cmsg sets decoded; past it, start again

_CDEF = """
struct iovec { void *iov_base; size_t iov_len; };
struct msghdr {
    void *msg_name; unsigned int msg_namelen;
    struct iovec *msg_iov; size_t msg_iovlen;
    void *msg_control; size_t msg_controllen;
    int msg_flags;
};
struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; };
int recvmmsg(int sockfd, struct mmsghdr *msgvec, unsigned int vlen, int flags, void *timeout);
"""

_ffi: Any = None
_lib: Any = None
_missing = False  # tried once and not there: not tried again


def _load() -> bool:
    global _ffi, _lib, _missing
    if _lib is not None or _missing:
        return not _missing
    try:
        import cffi

        ffi = cffi.FFI()
        ffi.cdef(_CDEF)
        lib = ffi.dlopen(None)
        lib.recvmmsg  # noqa: B018 - a C library without it raises here
    except (ImportError, OSError, AttributeError, NotImplementedError):
        _missing = True
        return False
    _ffi, _lib = ffi, lib
    return True


def available() -> bool:
    """Whether recvmmsg can be called here (Linux with cffi)."""
    return _load()


# struct cmsghdr {size_t cmsg_len; int cmsg_level; int cmsg_type;}, then the data, aligned
_CMSG_HEADER: Final = struct.Struct("@Nii")
_CMSG_ALIGN: Final = struct.calcsize("N")


def parse_cmsgs(control: bytes) -> Ancillary:
    """A msghdr's control buffer as recvmsg returns it: (level, type, data) each."""
    out: list[tuple[int, int, bytes]] = []
    offset = 0
    while offset + _CMSG_HEADER.size <= len(control):
        length, level, kind = _CMSG_HEADER.unpack_from(control, offset)
        if length < _CMSG_HEADER.size or offset + length > len(control):
            break
        out.append((level, kind, control[offset + _CMSG_HEADER.size : offset + length]))
        offset += (length + _CMSG_ALIGN - 1) & ~(_CMSG_ALIGN - 1)
    return tuple(out)


def parse_sockaddr(raw: bytes) -> Addr:
    """A sockaddr_in or sockaddr_in6 as Python's socket module shows it."""
    family = int.from_bytes(raw[:2], sys.byteorder)
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET:
        return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
    if family == socket.AF_INET6:
        flowinfo = int.from_bytes(raw[4:8], "big")
        (scope_id,) = struct.unpack_from("=I", raw, 24)
        return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flowinfo, scope_id)
    raise ValueError(f"address family {family} is not IP")


class MessageBatch:
    """recvmmsg's vector and buffers, made once and reused by every ``receive``."""

    def __init__(self, entries: int = ENTRIES, size: int = SIZE) -> None:
        if not _load():
            raise OSError(errno.ENOSYS, "recvmmsg is not available")
        ffi = _ffi
        self.entries = entries
        self.size = size
        self.truncated = 0  # datagrams longer than ``size``: dropped, counted
        self._msgs = ffi.new("struct mmsghdr[]", entries)
        self._iovs = ffi.new("struct iovec[]", entries)
        self._data = ffi.new("char[]", entries * size)
        self._names = ffi.new("char[]", entries * _NAME)
        self._controls = ffi.new("char[]", entries * CONTROL)
        for i in range(entries):
            self._iovs[i].iov_base = self._data + i * size
            self._iovs[i].iov_len = size
            hdr = self._msgs[i].msg_hdr
            hdr.msg_name = self._names + i * _NAME
            hdr.msg_namelen = _NAME
            hdr.msg_iov = self._iovs + i
            hdr.msg_iovlen = 1
            hdr.msg_control = self._controls + i * CONTROL
            hdr.msg_controllen = CONTROL
        # The kernel writes the lengths back: a copy of the vector as made resets them.
        self._pristine = ffi.new("struct mmsghdr[]", entries)
        ffi.memmove(self._pristine, self._msgs, ffi.sizeof(self._msgs))
        self._fields = _entry_fields(ffi)
        self._msgs_view = ffi.buffer(self._msgs)
        self._data_view = ffi.buffer(self._data)
        self._name_view = ffi.buffer(self._names)
        self._control_view = ffi.buffer(self._controls)
        self._addrs: dict[bytes, Addr] = {}
        self._cmsgs: dict[bytes, Ancillary] = {}

    def receive(self, fd: int, limit: int | None = None) -> list[Received]:
        """One recvmmsg on ``fd`` (non-blocking): up to ``limit`` (at most ``entries``)
        datagrams, each (data, ancillary, address); [] when none is waiting. OSError as
        recvmsg raises it (ECONNREFUSED: an ICMP error for an earlier send)."""
        ffi, msgs = _ffi, self._msgs
        vlen = self.entries if limit is None else max(1, min(limit, self.entries))
        ffi.memmove(msgs, self._pristine, ffi.sizeof(msgs))
        n = _lib.recvmmsg(fd, msgs, vlen, 0, ffi.NULL)
        if n < 0:
            err = ffi.errno
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return []
            raise OSError(err, f"recvmmsg: {errno.errorcode.get(err, err)}")
        data, names, controls = self._data_view, self._name_view, self._control_view
        addrs, cmsgs = self._addrs, self._cmsgs
        size = self.size
        out: list[Received] = []
        fields = self._fields.iter_unpack(self._msgs_view[: n * self._fields.size])
        # The two cache look-ups below are written out, not a helper: this runs per datagram.
        for i, (namelen, controllen, flags, length) in enumerate(fields):
            if flags & _MSG_TRUNC:
                self.truncated += 1
                continue
            start = i * _NAME
            raw_name = names[start : start + namelen]
            addr = addrs.get(raw_name)
            if addr is None:
                if len(addrs) >= _MAX_CACHED:
                    addrs.clear()
                addr = addrs[raw_name] = parse_sockaddr(raw_name)
            if controllen:
                start = i * CONTROL
                raw_control = controls[start : start + controllen]
                ancillary = cmsgs.get(raw_control)
                if ancillary is None:
                    if len(cmsgs) >= _MAX_CACHED:
                        cmsgs.clear()
                    ancillary = cmsgs[raw_control] = parse_cmsgs(raw_control)
            else:
                ancillary = ()
            start = i * size
            out.append((data[start : start + length], ancillary, addr))
        return out


def _entry_fields(ffi: Any) -> struct.Struct:
    """One struct mmsghdr as (msg_namelen, msg_controllen, msg_flags, msg_len): what the
    kernel wrote back, read in one unpack instead of a cffi attribute access each."""
    codes = {4: "I", 8: "Q"}
    fields = [
        (ffi.offsetof("struct mmsghdr", "msg_hdr", "msg_namelen"), "I"),
        (
            ffi.offsetof("struct mmsghdr", "msg_hdr", "msg_controllen"),
            codes[ffi.sizeof("size_t")],
        ),
        (ffi.offsetof("struct mmsghdr", "msg_hdr", "msg_flags"), "i"),
        (ffi.offsetof("struct mmsghdr", "msg_len"), "I"),
    ]
    fmt, at = "=", 0
    for offset, code in fields:
        fmt += f"{offset - at}x{code}" if offset > at else code
        at = offset + struct.calcsize("=" + code)
    entry = ffi.sizeof("struct mmsghdr")
    return struct.Struct(fmt + (f"{entry - at}x" if entry > at else ""))
