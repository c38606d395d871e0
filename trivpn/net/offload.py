"""TCP segmentation offload for a TUN opened with IFF_VNET_HDR, done in user space.

With ``IFF_VNET_HDR`` every read and write on the TUN starts with a ``struct
virtio_net_hdr``, and the kernel moves up to 64 KiB of one TCP flow per syscall:

- ``coalesce`` (our GRO) merges a batch of IP packets bound for the TUN: consecutive
  segments of one TCP flow become one GSO frame that the kernel forwards (and, if needed,
  splits again) as a unit, instead of one ``write`` per 1400-byte packet.
- ``segment`` (our TSO) splits a GSO frame read from the TUN back into IP packets, each
  with its own headers and checksums, ready to be encrypted one by one.

Only what Linux GRO itself would merge is merged (tcp_gro_receive, inet_gro_receive,
ipv6_gro_receive): same flow and headers, plain ACK segments in sequence, valid checksums.
Malformed packets are never touched; the kernel judges them as it would without us.

Checksum arithmetic: for a buffer of even length, ``int.from_bytes(buf, "big") % 0xFFFF``
is its 16-bit ones-complement sum modulo 0xFFFF, because 2**16 == 1 (mod 0xFFFF); C does
the word loop. A residue of 0 stands for a ones-complement sum of 0xFFFF, except for an
all-zero buffer (a TCP pseudo header is never all zero: the protocol is 6).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

# struct virtio_net_hdr (include/uapi/linux/virtio_net.h), without num_buffers.
VNET_HDR_LEN: Final = 10
ZERO_HDR: Final = bytes(VNET_HDR_LEN)
# Host byte order: a TUN left at its default (no TUNSETVNETLE/BE) uses native endianness.
_VNET = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset

VIRTIO_NET_HDR_F_NEEDS_CSUM: Final = 1
VIRTIO_NET_HDR_GSO_NONE: Final = 0
VIRTIO_NET_HDR_GSO_TCPV4: Final = 1
VIRTIO_NET_HDR_GSO_TCPV6: Final = 4
VIRTIO_NET_HDR_GSO_ECN: Final = 0x80

# The TUN side (tun.py): open with IFF_TUN | IFF_NO_PI | IFF_VNET_HDR, then TUNSETVNETHDRSZ
# with VNET_HDR_LEN. No TUNSETOFFLOAD: without it the kernel sends no GSO frames; segment()
# still handles TCP ones (a test enables TSO to check it) and refuses any other GSO type.
IFF_VNET_HDR: Final = 0x4000
TUNSETVNETHDRSZ: Final = 0x400454D8  # _IOW('T', 216, int)

MAX_SEGMENTS: Final = 64  # as Linux GRO: at most 64 segments per frame
MAX_FRAME_LEN: Final = 65535  # bytes of IP packet per frame (the IPv4 total length field)

_IPPROTO_TCP: Final = 6
_TCP_CSUM_OFFSET: Final = 16
_FIN, _PSH, _ACK, _CWR = 0x01, 0x08, 0x10, 0x80

Iovec = list[bytes | memoryview]


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The Internet checksum (RFC 1071): ones-complement of the ones-complement sum."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8  # pad the odd byte at the end, as the high half of a last word
    residue = value % 0xFFFF
    if residue:
        return 0xFFFF - residue
    return 0 if value else 0xFFFF


def _complement(total: int) -> int:
    """The checksum for a sum of 16-bit words known not to be all zero."""
    residue = total % 0xFFFF
    return 0xFFFF - residue if residue else 0


def _sum(data: bytes | bytearray) -> int:
    """The ones-complement sum of ``data`` up to a multiple of 0xFFFF (pads an odd byte)."""
    value = int.from_bytes(data, "big")
    return value << 8 if len(data) & 1 else value


# -- write side: coalesce ----------------------------------------------------------------------


class _Frame:
    """One flow's open GSO frame while a batch is coalesced."""

    __slots__ = (
        "count",
        "ended",
        "gso_size",
        "hdr_len",
        "head",
        "iov",
        "ip_len",
        "length",
        "match",
        "psh",
        "seq",
    )

    def __init__(self, packet: bytes, iov: Iovec, ip_len: int, hdr_len: int, seq: int) -> None:
        self.head = packet  # the first segment: its headers become the frame's
        self.iov = iov  # its slot in the output, [ZERO_HDR, packet] until a merge
        self.ip_len = ip_len
        self.hdr_len = hdr_len
        self.gso_size = len(packet) - hdr_len
        self.length = len(packet)
        self.count = 1
        self.seq = (seq + self.gso_size) & 0xFFFFFFFF  # the next segment's sequence number
        # PSH or a short segment ends a frame; so does a first segment with PSH.
        self.psh = bool(packet[ip_len + 13] & _PSH)
        self.ended = self.psh
        self.match: tuple[bytes, bytes, bytes] | None = None  # by _fits, when first needed


def coalesce(packets: Sequence[bytes], *, verify_checksums: bool = True) -> list[Iovec]:
    """The iovec lists for one ``os.writev`` each that write ``packets`` to the TUN.

    A run of in-sequence TCP segments of one flow becomes ``[gso_hdr, headers, payload
    views...]``; anything else stays ``[ZERO_HDR, packet]``. Flows may be interleaved in the
    batch; each keeps its own order, but different flows may change places. Payloads are
    memoryviews of the given packets, which must stay alive until written.

    The kernel recomputes the TCP checksum of a merged frame, so merging a corrupt segment
    would make it look valid downstream: segments are merged only when their IPv4 header
    and TCP checksums verify. ``verify_checksums=False`` skips that (most of the cost) for
    packets whose integrity is already proven, as Linux's WireGuard marks decrypted packets
    CHECKSUM_UNNECESSARY because their AEAD tag verified.
    """
    out: list[Iovec] = []
    frames: dict[bytes, _Frame] = {}
    for packet in packets:
        n = len(packet)
        if n >= 41 and packet[0] == 0x45 and packet[9] == _IPPROTO_TCP:
            key = packet[12:24]  # addresses and ports
            ip_len = 20
            # No fragments (MF, offset, reserved bit), total length the exact size.
            if packet[6] & 0xBF or packet[7] or (packet[2] << 8 | packet[3]) != n:
                _pass_flow(out, frames, key, packet)
                continue
        elif n >= 61 and packet[0] >> 4 == 6 and packet[6] == _IPPROTO_TCP:
            key = packet[8:44]
            ip_len = 40
            if (packet[4] << 8 | packet[5]) != n - 40:
                _pass_flow(out, frames, key, packet)
                continue
        else:
            _pass_flow(out, frames, _tcp_flow_key(packet), packet)
            continue

        hdr_len = ip_len + ((packet[ip_len + 12] >> 4) << 2)
        # A plain ACK (PSH allowed) with data, TCP header inside the packet.
        if packet[ip_len + 13] | _PSH != _ACK | _PSH or hdr_len < ip_len + 20 or hdr_len >= n:
            _pass_flow(out, frames, key, packet)
            continue
        seq = int.from_bytes(packet[ip_len + 4 : ip_len + 8], "big")

        frame = frames.get(key)
        if frame is not None:
            if _fits(frame, packet, n, ip_len, hdr_len, seq):
                if verify_checksums and frame.count == 1 and not _valid(frame.head, ip_len):
                    _close(frame)  # the head goes out alone, as it came
                elif not verify_checksums or _valid(packet, ip_len):
                    _append(frame, packet, n, hdr_len, seq)
                    continue
                else:
                    _close(frame)
                    del frames[key]
                    out.append([ZERO_HDR, packet])
                    continue
            else:
                _close(frame)
        iov: Iovec = [ZERO_HDR, packet]
        out.append(iov)
        frames[key] = _Frame(packet, iov, ip_len, hdr_len, seq)

    for frame in frames.values():
        _close(frame)
    return out


def _fits(frame: _Frame, packet: bytes, n: int, ip_len: int, hdr_len: int, seq: int) -> bool:
    """Whether ``packet`` may follow the frame's segments (checksums aside)."""
    head = frame.head
    payload_len = n - hdr_len
    if (
        frame.ended
        or seq != frame.seq
        or hdr_len != frame.hdr_len
        or payload_len > frame.gso_size
        or frame.count >= MAX_SEGMENTS
        or frame.length + payload_len > MAX_FRAME_LEN
    ):
        return False
    if ip_len == 20:
        # TOS (with ECN), DF, TTL; IP IDs are not compared (segment() renumbers anyway).
        if packet[1] != head[1] or packet[6] != head[6] or packet[8] != head[8]:
            return False
    # Version, traffic class and flow label; hop limit.
    elif packet[0:4] != head[0:4] or packet[7] != head[7]:
        return False
    tcp = ip_len
    # Ack number and data offset; window; options (timestamps included), as tcp_gro_receive.
    if frame.match is None:
        frame.match = (
            head[tcp + 8 : tcp + 13],
            head[tcp + 14 : tcp + 16],
            head[tcp + 20 : hdr_len],
        )
    return (
        packet[tcp + 8 : tcp + 13],
        packet[tcp + 14 : tcp + 16],
        packet[tcp + 20 : hdr_len],
    ) == frame.match


def _valid(packet: bytes, ip_len: int) -> bool:
    """Whether the IPv4 header checksum (if any) and the TCP checksum verify."""
    n = len(packet)
    # Reduce the big integer once, then work on small residues.
    whole = int.from_bytes(packet, "big") % 0xFFFF
    if n & 1:
        whole <<= 8  # the odd last byte is the high half of a padded word
    if ip_len == 20:
        if int.from_bytes(packet[:20], "big") % 0xFFFF:
            return False
        # A valid IPv4 header sums to 0 (mod 0xFFFF): the rest is TCP; add the pseudo header.
        return (whole + int.from_bytes(packet[12:20], "big") + _IPPROTO_TCP + n - 20) % 0xFFFF == 0
    # The IPv6 header's addresses are the pseudo header's; drop its first 8 bytes.
    pseudo_rest = _IPPROTO_TCP + n - 40
    return (whole - int.from_bytes(packet[:8], "big") + pseudo_rest) % 0xFFFF == 0


def _append(frame: _Frame, packet: bytes, n: int, hdr_len: int, seq: int) -> None:
    payload_len = n - hdr_len
    if frame.count == 1:
        frame.iov.append(memoryview(frame.head)[hdr_len:])
    frame.iov.append(memoryview(packet)[hdr_len:])
    frame.count += 1
    frame.length += payload_len
    frame.seq = (seq + payload_len) & 0xFFFFFFFF
    frame.psh = bool(packet[frame.ip_len + 13] & _PSH)
    frame.ended = frame.psh or payload_len < frame.gso_size


def _close(frame: _Frame) -> None:
    """Turn a merged frame's slot into its final iovec: GSO header, fixed headers, payloads."""
    if frame.count == 1:
        return  # the slot already writes the packet as is
    ip_len, hdr_len, length = frame.ip_len, frame.hdr_len, frame.length
    header = bytearray(frame.head[:hdr_len])
    if ip_len == 20:
        header[2:4] = length.to_bytes(2, "big")
        header[10:12] = b"\0\0"
        header[10:12] = checksum(header[:20]).to_bytes(2, "big")
        addresses = header[12:20]
        gso_type = VIRTIO_NET_HDR_GSO_TCPV4
    else:
        header[4:6] = (length - 40).to_bytes(2, "big")
        addresses = header[8:40]
        gso_type = VIRTIO_NET_HDR_GSO_TCPV6
    if frame.psh:
        header[ip_len + 13] |= _PSH  # the last segment's push, kept on the last one by GSO
    # The pseudo header's sum, folded but not complemented: the kernel adds the TCP header
    # and payload (CHECKSUM_PARTIAL) and complements when it finishes the checksum.
    pseudo = int.from_bytes(addresses, "big") + _IPPROTO_TCP + length - ip_len
    header[ip_len + 16 : ip_len + 18] = ((pseudo % 0xFFFF) or 0xFFFF).to_bytes(2, "big")
    frame.iov[0] = _VNET.pack(
        VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type,
        hdr_len,
        frame.gso_size,
        ip_len,
        _TCP_CSUM_OFFSET,
    )
    frame.iov[1] = bytes(header)


def _pass_flow(
    out: list[Iovec], frames: dict[bytes, _Frame], key: bytes | None, packet: bytes
) -> None:
    """Write ``packet`` as is, after its flow's open frame so the flow keeps its order."""
    if key is not None:
        frame = frames.pop(key, None)
        if frame is not None:
            _close(frame)
    out.append([ZERO_HDR, packet])


def _tcp_flow_key(packet: bytes) -> bytes | None:
    """The flow key of a TCP packet that cannot be merged (e.g. IPv4 options), if readable."""
    n = len(packet)
    if n >= 20 and packet[0] >> 4 == 4 and packet[9] == _IPPROTO_TCP:
        ip_len = (packet[0] & 0x0F) << 2
        if ip_len >= 20 and n >= ip_len + 4:
            return packet[12:20] + packet[ip_len : ip_len + 4]
    elif n >= 44 and packet[0] >> 4 == 6 and packet[6] == _IPPROTO_TCP:
        return packet[8:44]
    return None


# -- read side: segment ------------------------------------------------------------------------


def segment(frame: bytes) -> list[bytes]:
    """The IP packets in ``frame`` (virtio header + packet) as read from the TUN.

    A GSO TCP frame is cut into ``gso_size`` pieces, each a complete packet with fresh
    lengths, IPv4 ID and header checksum, sequence number and TCP checksum; a frame whose
    checksum the kernel left to us (NEEDS_CSUM) gets it completed. Returns [] for a frame
    that is truncated or inconsistent, or of a GSO type we never enable.
    """
    if len(frame) < VNET_HDR_LEN:
        return []
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = _VNET.unpack_from(frame)
    gso_type &= ~VIRTIO_NET_HDR_GSO_ECN  # CWR stays on the first segment either way
    if gso_type == VIRTIO_NET_HDR_GSO_NONE:
        if not flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            return [frame[VNET_HDR_LEN:]]
        return _complete_checksum(frame[VNET_HDR_LEN:], csum_start, csum_offset)
    if gso_type not in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6):
        return []
    return _split_tcp(memoryview(frame)[VNET_HDR_LEN:], gso_type, gso_size, csum_start, csum_offset)


def _complete_checksum(packet: bytes, csum_start: int, csum_offset: int) -> list[bytes]:
    """Finish a CHECKSUM_PARTIAL packet: the field holds the pseudo header's folded sum."""
    field = csum_start + csum_offset
    if field + 2 > len(packet):
        return []
    buf = bytearray(packet)
    residue = _sum(packet[csum_start:]) % 0xFFFF
    # As skb_checksum_help: a result of 0 is sent as 0xFFFF (0 means "none" for UDP).
    buf[field : field + 2] = (0xFFFF - residue).to_bytes(2, "big")
    return [bytes(buf)]


def _split_tcp(
    packet: memoryview, gso_type: int, gso_size: int, tcp: int, csum_offset: int
) -> list[bytes]:
    n = len(packet)
    if n < 20 or gso_size == 0 or csum_offset != _TCP_CSUM_OFFSET or tcp & 1:
        return []
    if gso_type == VIRTIO_NET_HDR_GSO_TCPV4:
        if packet[0] >> 4 != 4 or (packet[0] & 0x0F) << 2 != tcp or tcp < 20:
            return []
        addresses = packet[12:20]
    else:
        # tcp > 40 leaves extension headers in place; they are copied to every segment.
        if packet[0] >> 4 != 6 or tcp < 40:
            return []
        addresses = packet[8:40]
    if n < tcp + 20:
        return []
    hdr_len = tcp + ((packet[tcp + 12] >> 4) << 2)
    if hdr_len < tcp + 20 or hdr_len > n:
        return []

    template = bytearray(packet[:hdr_len])
    template[tcp + 16 : tcp + 18] = b"\0\0"
    seq0 = int.from_bytes(template[tcp + 4 : tcp + 8], "big")
    flags0 = template[tcp + 13]
    ip_id0 = int.from_bytes(template[4:6], "big")
    pseudo = int.from_bytes(addresses, "big") + _IPPROTO_TCP
    is_v4 = gso_type == VIRTIO_NET_HDR_GSO_TCPV4
    if is_v4:
        template[10:12] = b"\0\0"

    segments: list[bytes] = []
    starts = range(hdr_len, n, gso_size) if n > hdr_len else range(hdr_len, hdr_len + 1)
    last = len(starts) - 1
    for i, start in enumerate(starts):
        seg = bytearray(template)
        seg += packet[start : start + gso_size]
        seg_len = len(seg)
        if is_v4:
            seg[2:4] = seg_len.to_bytes(2, "big")
            seg[4:6] = ((ip_id0 + i) & 0xFFFF).to_bytes(2, "big")
            seg[10:12] = checksum(seg[:tcp]).to_bytes(2, "big")
        else:
            seg[4:6] = (seg_len - 40).to_bytes(2, "big")
        seg[tcp + 4 : tcp + 8] = ((seq0 + i * gso_size) & 0xFFFFFFFF).to_bytes(4, "big")
        flags = flags0
        if i:
            flags &= ~_CWR  # congestion window reduced: said once, by the first segment
        if i != last:
            flags &= ~(_FIN | _PSH)
        seg[tcp + 13] = flags
        # tcp is even, so the headers before it sum separately from the TCP part. Reduce the
        # big integer first: arithmetic on it would copy it.
        whole = int.from_bytes(seg, "big") % 0xFFFF
        if seg_len & 1:
            whole <<= 8
        tcp_sum = whole - int.from_bytes(seg[:tcp], "big") + pseudo + seg_len - tcp
        seg[tcp + 16 : tcp + 18] = _complement(tcp_sum).to_bytes(2, "big")
        segments.append(bytes(seg))
    return segments
