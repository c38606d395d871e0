"""offload: user-space GRO (coalesce) and TSO (segment) for a TUN with IFF_VNET_HDR.

Packets are built here with a slow, obviously correct checksum; the kernel's part of a
GSO write (finishing the partial checksum) is done here the same slow way.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address

from hypothesis import given, settings
from hypothesis import strategies as st

from trivpn.net.offload import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VNET_HDR_LEN,
    ZERO_HDR,
    checksum,
    coalesce,
    segment,
)

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
VNET = struct.Struct("=BBHHHH")
# virtio_net.h values trivpn never sends: segment() passes DATA_VALID, refuses UDP GSO
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_UDP = 3
VIRTIO_NET_HDR_GSO_UDP_L4 = 5
MSS = 1400


def ref_checksum(data: bytes) -> int:
    """RFC 1071, word by word with end-around carry."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ref_sum(data: bytes) -> int:
    """The folded ones-complement sum (not complemented)."""
    return ~ref_checksum(data) & 0xFFFF


@dataclass(frozen=True)
class Seg:
    """One TCP segment's fields; ``build()`` gives the IP packet with correct checksums."""

    payload: bytes
    seq: int = 1_000_000
    v6: bool = False
    src: str = "10.0.0.2"
    dst: str = "203.0.113.7"
    sport: int = 40000
    dport: int = 5201
    ack: int = 777
    flags: int = ACK
    window: int = 502
    options: bytes = b""
    ttl: int = 64
    tos: int = 0
    ip_id: int = 100
    frag: int = 0x4000  # DF, offset 0
    ip_options: bytes = b""
    flow_label: int = 0

    def tcp_header(self, payload_len: int) -> bytes:
        doff = (20 + len(self.options)) // 4
        return (
            struct.pack(
                "!HHIIBBHHH",
                self.sport,
                self.dport,
                self.seq & 0xFFFFFFFF,
                self.ack,
                doff << 4,
                self.flags,
                self.window,
                0,
                0,
            )
            + self.options
        )

    def build(self) -> bytes:
        tcp = self.tcp_header(len(self.payload)) + self.payload
        if self.v6:
            src, dst = IPv6Address(self.src).packed, IPv6Address(self.dst).packed
            pseudo = src + dst + struct.pack("!IxxxB", len(tcp), 6)
            ip = struct.pack(
                "!IHBB", 6 << 28 | self.tos << 20 | self.flow_label, len(tcp), 6, self.ttl
            )
            ip += src + dst
        else:
            src, dst = IPv4Address(self.src).packed, IPv4Address(self.dst).packed
            pseudo = src + dst + struct.pack("!xBH", 6, len(tcp))
            ihl = 5 + len(self.ip_options) // 4
            header = bytearray(
                struct.pack(
                    "!BBHHHBBH4s4s",
                    4 << 4 | ihl,
                    self.tos,
                    ihl * 4 + len(tcp),
                    self.ip_id,
                    self.frag,
                    self.ttl,
                    6,
                    0,
                    src,
                    dst,
                )
                + self.ip_options
            )
            header[10:12] = ref_checksum(bytes(header)).to_bytes(2, "big")
            ip = bytes(header)
        tcp_csum = ref_checksum(pseudo + tcp)
        ip_len = len(ip)
        packet = bytearray(ip + tcp)
        packet[ip_len + 16 : ip_len + 18] = tcp_csum.to_bytes(2, "big")
        return bytes(packet)


def v6(**fields: object) -> Seg:
    return Seg(v6=True, src="fd00::2", dst="2001:db8::7", **fields)  # type: ignore[arg-type]


def stream(first: Seg, sizes: list[int], *, psh_last: bool = False) -> list[Seg]:
    """Consecutive segments of ``first``'s flow with the given payload sizes."""
    segs = []
    seq = first.seq
    for i, size in enumerate(sizes):
        payload = bytes((seq + k) & 0xFF for k in range(size))
        flags = first.flags | (PSH if psh_last and i == len(sizes) - 1 else 0)
        segs.append(replace(first, payload=payload, seq=seq, flags=flags, ip_id=first.ip_id + i))
        seq += size
    return segs


def packets(segs: list[Seg]) -> list[bytes]:
    return [s.build() for s in segs]


def flat(iov: list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(part) for part in iov)


def kernel_finish(iov: list[bytes | memoryview]) -> bytes:
    """What the kernel does with a NEEDS_CSUM write: checksum from csum_start over the rest."""
    flags, _gso, _hl, _size, start, offset = VNET.unpack(iov[0])
    packet = bytearray(flat(iov[1:]))
    assert flags & VIRTIO_NET_HDR_F_NEEDS_CSUM
    field = start + offset
    packet[field : field + 2] = ref_checksum(bytes(packet[start:])).to_bytes(2, "big")
    return bytes(packet)


def tcp_checksum_ok(packet: bytes) -> bool:
    if packet[0] >> 4 == 4:
        ip_len = (packet[0] & 0x0F) * 4
        pseudo = packet[12:20] + struct.pack("!xBH", 6, len(packet) - ip_len)
        if ref_checksum(packet[:ip_len]) != 0:
            return False
    else:
        ip_len = 40
        pseudo = packet[8:40] + struct.pack("!IxxxB", len(packet) - 40, 6)
    return ref_checksum(pseudo + packet[ip_len:]) == 0


def as_is(packet: bytes) -> list[bytes | memoryview]:
    return [ZERO_HDR, packet]


# -- checksum ----------------------------------------------------------------------------------


def test_checksum_rfc1071_example() -> None:
    # RFC 1071 section 3: the sum of 0001 f203 f4f5 f6f7 is ddf2.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ref_sum(data) == 0xDDF2
    assert checksum(data) == 0x220D
    assert checksum(bytearray(data)) == checksum(memoryview(data)) == 0x220D


def test_checksum_edge_values() -> None:
    assert checksum(b"") == 0xFFFF
    assert checksum(bytes(64)) == 0xFFFF  # all zero: sum 0, complement 0xFFFF
    assert checksum(b"\xff\xff") == 0  # sum 0xFFFF (negative zero), complement 0
    assert checksum(b"\xff\xff" * 9) == 0
    assert checksum(b"\x01") == 0xFEFF  # the odd byte is the high half of a padded word
    assert checksum(b"\x00\x01\x00") == 0xFFFE


@given(st.binary(max_size=3000))
def test_checksum_matches_reference(data: bytes) -> None:
    assert checksum(data) == ref_checksum(data)


@given(
    st.lists(st.sampled_from([0x0000, 0xFFFF, 0x8000, 0x7FFF, 0x0001]), max_size=40), st.booleans()
)
def test_checksum_matches_reference_on_carry_heavy_words(words: list[int], odd: bool) -> None:
    data = b"".join(w.to_bytes(2, "big") for w in words) + (b"\xff" if odd else b"")
    assert checksum(data) == ref_checksum(data)


def test_built_segments_verify() -> None:
    for seg in (Seg(b"hello"), v6(payload=b"hello!"), Seg(b"x", ip_options=b"\x01\x01\x01\x00")):
        assert tcp_checksum_ok(seg.build())


# -- coalesce: the happy path ------------------------------------------------------------------


def test_coalesce_v4_stream_into_one_gso_frame() -> None:
    segs = stream(Seg(b""), [MSS] * 9 + [600], psh_last=True)
    originals = packets(segs)
    [iov] = coalesce(originals)
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = VNET.unpack(iov[0])
    assert (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) == (
        VIRTIO_NET_HDR_F_NEEDS_CSUM,
        VIRTIO_NET_HDR_GSO_TCPV4,
        40,
        MSS,
        20,
        16,
    )
    header = iov[1]
    assert isinstance(header, bytes) and len(header) == 40
    total = 40 + 9 * MSS + 600
    assert int.from_bytes(header[2:4], "big") == total
    assert ref_checksum(header[:20]) == 0  # the IPv4 header checksum was fixed
    assert header[4:6] == originals[0][4:6]  # the first segment's IP id
    assert header[33] == ACK | PSH  # the last segment's PSH
    assert header[24:28] == originals[0][24:28]  # the first segment's seq
    pseudo = header[12:20] + struct.pack("!xBH", 6, total - 20)
    assert int.from_bytes(header[36:38], "big") == ref_sum(pseudo)  # partial, not complemented
    # Zero copy: the payloads are views of the packets given.
    assert all(isinstance(part, memoryview) for part in iov[2:])
    assert [part.obj for part in iov[2:]] == originals  # type: ignore[union-attr]
    assert b"".join(iov[2:]) == b"".join(s.payload for s in segs)


def test_coalesce_v6_stream_into_one_gso_frame() -> None:
    segs = stream(v6(payload=b"", flow_label=0x12345, tos=0x28), [1200] * 5)
    originals = packets(segs)
    [iov] = coalesce(originals)
    assert VNET.unpack(iov[0]) == (
        VIRTIO_NET_HDR_F_NEEDS_CSUM,
        VIRTIO_NET_HDR_GSO_TCPV6,
        60,
        1200,
        40,
        16,
    )
    header = iov[1]
    assert isinstance(header, bytes)
    assert int.from_bytes(header[4:6], "big") == 20 + 5 * 1200
    assert header[:4] == originals[0][:4] and header[6:40] == originals[0][6:40]
    assert header[53] == ACK  # no PSH anywhere
    pseudo = header[8:40] + struct.pack("!IxxxB", 20 + 5 * 1200, 6)
    assert int.from_bytes(header[56:58], "big") == ref_sum(pseudo)
    assert b"".join(iov[2:]) == b"".join(s.payload for s in segs)


def test_kernel_finished_frame_verifies_and_segments_back_to_the_originals() -> None:
    for first in (Seg(b"", options=bytes.fromhex("0101080a0000000100000002")), v6(payload=b"")):
        originals = packets(stream(first, [MSS] * 7 + [33], psh_last=True))
        [iov] = coalesce(originals)
        finished = kernel_finish(iov)
        assert tcp_checksum_ok(finished)
        assert segment(flat(iov[:1]) + finished) == originals
        # segment() does not depend on the kernel finishing first: it recomputes.
        assert segment(flat(iov)) == originals


@settings(max_examples=60, deadline=None)
@given(
    is_v6=st.booleans(),
    mss=st.integers(1, 1500),
    count=st.integers(2, 20),
    tail=st.integers(0, 1500),
    seq=st.integers(0, 2**32 - 1),
    ip_id=st.integers(0, 0xFFFF),
    options=st.sampled_from([b"", b"\x01\x01\x01\x01", bytes.fromhex("0101080a0000000100000002")]),
    psh=st.booleans(),
)
def test_roundtrip_property(
    is_v6: bool,
    mss: int,
    count: int,
    tail: int,
    seq: int,
    ip_id: int,
    options: bytes,
    psh: bool,
) -> None:
    first = v6(payload=b"", seq=seq) if is_v6 else Seg(b"", seq=seq)
    first = replace(first, options=options, ip_id=ip_id)
    sizes = [mss] * count + ([min(tail, mss)] if tail > 0 else [])
    segs = [
        replace(s, ip_id=(ip_id + i) & 0xFFFF)
        for i, s in enumerate(stream(first, sizes, psh_last=psh))
    ]
    originals = packets(segs)
    frames = coalesce(originals)
    back = []
    for iov in frames:
        if iov[0] == ZERO_HDR:
            back.append(flat(iov[1:]))
        else:
            finished = kernel_finish(iov)
            assert tcp_checksum_ok(finished)
            back.extend(segment(flat(iov[:1]) + finished))
    assert back == originals
    per_frame = max(1, min(64, (65535 - 40 - len(options)) // mss))
    assert len(frames) == -(-len(sizes) // per_frame)


def test_interleaved_flows_keep_one_frame_each_and_their_own_order() -> None:
    a = packets(stream(Seg(b""), [MSS] * 4))
    b = packets(stream(Seg(b"", sport=40001), [MSS] * 4))
    c = packets(stream(v6(payload=b""), [MSS] * 3))
    udp = bytes.fromhex("4500001c000040004011") + bytes(18)
    batch = [a[0], b[0], c[0], a[1], udp, b[1], a[2], c[1], b[2], a[3], b[3], c[2]]
    frames = coalesce(batch)
    assert len(frames) == 4
    assert frames[3] == as_is(udp)
    for iov, flow in zip(frames[:3], (a, b, c), strict=True):
        assert VNET.unpack(iov[0])[0] == VIRTIO_NET_HDR_F_NEEDS_CSUM
        assert [part.obj for part in iov[2:]] == flow  # type: ignore[union-attr]


def test_non_tcp_and_pure_acks_pass_through_in_place() -> None:
    udp = bytes.fromhex("4500001c000040004011") + bytes(18)
    icmp6 = bytes.fromhex("6000000000083a40") + bytes(40)
    ack = Seg(b"").build()
    assert coalesce([udp, icmp6, ack]) == [as_is(udp), as_is(icmp6), as_is(ack)]
    assert coalesce([]) == []


def test_single_segment_is_written_as_is() -> None:
    packet = Seg(b"x" * 100).build()
    [iov] = coalesce([packet])
    assert iov == [ZERO_HDR, packet] and iov[1] is packet


# -- coalesce: what must not be merged -----------------------------------------------------------


def frame_sizes(batch: list[bytes]) -> list[int]:
    """Segments per write, in output order."""
    return [1 if iov[0] == ZERO_HDR else len(iov) - 2 for iov in coalesce(batch)]


def test_out_of_order_seq_starts_a_new_frame() -> None:
    s = stream(Seg(b""), [MSS] * 4)
    assert frame_sizes(packets([s[0], s[2], s[3]])) == [1, 2]
    assert frame_sizes(packets([s[1], s[0]])) == [1, 1]
    assert frame_sizes(packets([s[0], s[1], s[1]])) == [2, 1]  # a retransmission


def test_different_ack_or_window_or_flow_does_not_merge() -> None:
    s = stream(Seg(b""), [MSS] * 2)
    for changed in (
        replace(s[1], ack=778),
        replace(s[1], window=503),
        replace(s[1], dport=5202),
        replace(s[1], dst="203.0.113.8"),
    ):
        assert frame_sizes(packets([s[0], changed])) == [1, 1]


def test_psh_ends_a_frame() -> None:
    s = stream(Seg(b""), [MSS] * 4)
    s[1] = replace(s[1], flags=ACK | PSH)
    assert frame_sizes(packets(s)) == [2, 2]
    s[0] = replace(s[0], flags=ACK | PSH)
    assert frame_sizes(packets(s[:2])) == [1, 1]


def test_other_tcp_flags_never_merge() -> None:
    s = stream(Seg(b""), [MSS] * 3)
    for flag in (SYN, FIN, RST, URG, ECE, CWR):
        middle = replace(s[1], flags=ACK | flag)
        assert frame_sizes(packets([s[0], middle, s[2]])) == [1, 1, 1], hex(flag)
        assert frame_sizes(packets([replace(s[0], flags=ACK | flag), s[1]])) == [1, 1]
    no_ack = replace(s[1], flags=PSH)
    assert frame_sizes(packets([s[0], no_ack])) == [1, 1]


def test_tcp_options_must_be_identical() -> None:
    ts1, ts2 = bytes.fromhex("0101080a0000000100000002"), bytes.fromhex("0101080a0000000200000002")
    s = stream(Seg(b"", options=ts1), [MSS] * 2)
    assert frame_sizes(packets(s)) == [2]
    assert frame_sizes(packets([s[0], replace(s[1], options=ts2)])) == [1, 1]
    assert frame_sizes(packets([s[0], replace(s[1], options=b"")])) == [1, 1]  # length differs


def test_ip_header_fields_must_match() -> None:
    s = stream(Seg(b""), [MSS] * 2)
    for changed in (replace(s[1], ttl=63), replace(s[1], tos=1), replace(s[1], frag=0)):
        assert frame_sizes(packets([s[0], changed])) == [1, 1]
    assert frame_sizes(packets([s[0], replace(s[1], ip_id=9)])) == [2]  # ids are not compared
    s6 = stream(v6(payload=b""), [MSS] * 2)
    for changed in (
        replace(s6[1], flow_label=1),
        replace(s6[1], tos=4),
        replace(s6[1], ttl=1),
        replace(s6[1], src="fd00::3"),
    ):
        assert frame_sizes(packets([s6[0], changed])) == [1, 1]


def test_both_frames_without_df_still_merge() -> None:
    s = stream(Seg(b"", frag=0), [MSS] * 2)
    assert frame_sizes(packets(s)) == [2]


def test_ipv4_options_and_fragments_pass_through() -> None:
    s = stream(Seg(b""), [MSS] * 3)
    with_options = replace(s[1], ip_options=b"\x01\x01\x01\x00")
    assert frame_sizes(packets([s[0], with_options, s[2]])) == [1, 1, 1]
    for frag in (0x2000, 0x4001, 0x0001, 0x8000):  # MF, offsets, the reserved bit
        assert frame_sizes(packets([s[0], replace(s[1], frag=frag), s[2]])) == [1, 1, 1]
        assert frame_sizes(packets([replace(x, frag=frag) for x in s])) == [1, 1, 1]


def test_short_segment_ends_the_frame_and_longer_cannot_follow() -> None:
    s = stream(Seg(b""), [MSS, 1000, MSS, MSS])
    assert frame_sizes(packets(s)) == [2, 2]
    s = stream(Seg(b""), [1000, MSS])
    assert frame_sizes(packets(s)) == [1, 1]


def test_at_most_64_segments_and_65535_bytes() -> None:
    assert frame_sizes(packets(stream(Seg(b""), [100] * 130))) == [64, 64, 2]
    # 40 + 45 * 1448 = 65200 fits; one more would be 66648.
    assert frame_sizes(packets(stream(Seg(b""), [1448] * 46))) == [45, 1]
    big = frame_sizes(packets(stream(v6(payload=b""), [1440] * 46)))
    assert big == [45, 1]


def test_bad_checksums_are_never_merged() -> None:
    s = packets(stream(Seg(b""), [MSS] * 3))
    corrupt = bytearray(s[1])
    corrupt[100] ^= 1
    assert frame_sizes([s[0], bytes(corrupt), s[2]]) == [1, 1, 1]
    bad_head = bytearray(s[0])
    bad_head[500] ^= 0xFF
    assert frame_sizes([bytes(bad_head), s[1], s[2]]) == [1, 2]
    bad_ip = bytearray(s[1])
    bad_ip[8] -= 1  # TTL changed without fixing the header checksum
    bad_ip[36] += 0  # same TCP
    assert frame_sizes([s[0], bytes(bad_ip)]) == [1, 1]
    s6 = packets(stream(v6(payload=b""), [MSS] * 2))
    corrupt6 = bytearray(s6[1])
    corrupt6[-1] ^= 0x80
    assert frame_sizes([s6[0], bytes(corrupt6)]) == [1, 1]


def test_checksums_can_be_trusted_instead() -> None:
    s = packets(stream(Seg(b""), [MSS] * 3))
    corrupt = bytearray(s[1])
    corrupt[100] ^= 1
    batch = [s[0], bytes(corrupt), s[2]]
    assert len(coalesce(batch)) == 3
    [iov] = coalesce(batch, verify_checksums=False)
    assert VNET.unpack(iov[0])[1] == VIRTIO_NET_HDR_GSO_TCPV4 and len(iov) == 5


def test_a_passed_through_packet_closes_its_flows_frame() -> None:
    s = stream(Seg(b""), [MSS] * 4)
    fin = replace(s[2], flags=ACK | FIN)
    batch = packets([s[0], s[1], fin, s[3]])
    frames = coalesce(batch)
    # s[3] must not jump ahead of the FIN into the first frame.
    assert [len(iov) - 2 if iov[0] != ZERO_HDR else 1 for iov in frames] == [2, 1, 1]
    assert frames[1] == as_is(batch[2]) and frames[2] == as_is(batch[3])
    # A pure ACK (a window update) carries the next seq: the data after it stays after it.
    update = replace(s[2], payload=b"", window=9000)
    assert frame_sizes(packets([s[0], s[1], update, s[2], s[3]])) == [2, 1, 2]


def test_malformed_packets_pass_through_untouched() -> None:
    good = Seg(b"x" * 200).build()
    good6 = v6(payload=b"y" * 200).build()
    bad_doff_small = bytearray(good)
    bad_doff_small[32] = 0x40  # 16-byte TCP header
    bad_doff_big = bytearray(good)
    bad_doff_big[32] = 0xF0  # 60 bytes claimed, fine, but then check a truncated one
    truncated = good[:30]
    wrong_total = bytearray(good)
    wrong_total[2:4] = (len(good) + 4).to_bytes(2, "big")
    wrong_plen = bytearray(good6)
    wrong_plen[4:6] = b"\x00\x10"
    ext_header = bytearray(good6)
    ext_header[6] = 0  # hop-by-hop options first
    doff_past_end = Seg(b"").build()[:-1] + b"\x00" * 5
    weird = [
        b"",
        b"\x45",
        b"\x60" * 39,
        b"\xff" * 100,
        truncated,
        bytes(bad_doff_small),
        bytes(bad_doff_big),
        bytes(wrong_total),
        bytes(wrong_plen),
        bytes(ext_header),
        doff_past_end,
        good[:-50],
        good6[:45],
    ]
    for packet in weird:
        frames = coalesce([good, packet, good])
        assert [iov[1] for iov in frames] == [good, packet, good]
        assert all(iov[0] == ZERO_HDR and len(iov) == 2 for iov in frames)


# -- segment -------------------------------------------------------------------------------------


def test_segment_passes_a_plain_packet_through() -> None:
    packet = Seg(b"data").build()
    assert segment(ZERO_HDR + packet) == [packet]
    hdr = VNET.pack(VIRTIO_NET_HDR_F_DATA_VALID, VIRTIO_NET_HDR_GSO_NONE, 0, 0, 0, 0)
    assert segment(hdr + packet) == [packet]


def udp_partial(payload: bytes) -> tuple[bytes, bytes]:
    """A UDP/IPv4 packet as the kernel hands it with CHECKSUM_PARTIAL, and the vnet header."""
    src, dst = IPv4Address("10.0.0.1").packed, IPv4Address("10.0.0.2").packed
    length = 8 + len(payload)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 1, 0, 64, 17, 0, src, dst))
    ip[10:12] = ref_checksum(bytes(ip)).to_bytes(2, "big")
    pseudo = src + dst + struct.pack("!xBH", 17, length)
    udp = struct.pack("!HHHH", 5000, 53, length, ref_sum(pseudo)) + payload
    hdr = VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 0, 0, 20, 6)
    return hdr, bytes(ip) + udp


def test_segment_completes_a_partial_udp_checksum() -> None:
    hdr, packet = udp_partial(b"hello, world")
    [done] = segment(hdr + packet)
    assert done[:26] == packet[:26] and done[28:] == packet[28:]
    pseudo = done[12:20] + struct.pack("!xBH", 17, len(done) - 20)
    assert ref_checksum(pseudo + done[20:]) == 0


def test_segment_sends_a_zero_udp_checksum_as_ffff() -> None:
    # Choose the last payload word so that the finished checksum would come out 0.
    hdr, packet = udp_partial(b"abcd\0\0")
    src, dst = packet[12:16], packet[16:20]
    udp = bytearray(packet[20:])
    udp[6:8] = b"\0\0"
    pseudo = src + dst + struct.pack("!xBH", 17, len(udp))
    filler = ref_checksum(pseudo + bytes(udp))
    patched = bytearray(packet)
    patched[-2:] = filler.to_bytes(2, "big")
    [done] = segment(hdr + bytes(patched))
    assert done[26:28] == b"\xff\xff"
    assert ref_checksum(pseudo + done[20:]) == 0


def test_segment_completes_a_partial_tcp_checksum_v6() -> None:
    packet = bytearray(v6(payload=b"partial").build())
    pseudo = packet[8:40] + struct.pack("!IxxxB", len(packet) - 40, 6)
    packet[56:58] = ref_sum(bytes(pseudo)).to_bytes(2, "big")
    hdr = VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 60, 0, 40, 16)
    assert segment(hdr + bytes(packet)) == [v6(payload=b"partial").build()]


def gso_frame(first: Seg, total_payload: int, gso_size: int) -> bytes:
    """A frame as the kernel's TSO path hands it: one big segment, partial checksum."""
    payload = bytes(i * 7 & 0xFF for i in range(total_payload))
    packet = bytearray(replace(first, payload=payload).build())
    ip_len = 40 if first.v6 else 20
    gso_type = VIRTIO_NET_HDR_GSO_TCPV6 if first.v6 else VIRTIO_NET_HDR_GSO_TCPV4
    hdr_len = ip_len + 20 + len(first.options)
    # hdr_len as the kernel reports it may be the whole linear part: do not rely on it.
    hdr = VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, hdr_len + 300, gso_size, ip_len, 16)
    packet[ip_len + 16 : ip_len + 18] = b"\xab\xcd"  # whatever the stack left there
    return hdr + bytes(packet)


def test_segment_splits_a_gso_frame_with_flags_ids_and_checksums() -> None:
    first = Seg(b"", flags=ACK | PSH | FIN | CWR, ip_id=0xFFFE, seq=2**32 - 1000)
    out = segment(gso_frame(first, 3 * MSS + 10, MSS))
    assert [len(p) - 40 for p in out] == [MSS, MSS, MSS, 10]
    assert [p[33] for p in out] == [ACK | CWR, ACK, ACK, ACK | PSH | FIN]
    assert [int.from_bytes(p[4:6], "big") for p in out] == [0xFFFE, 0xFFFF, 0, 1]
    assert [int.from_bytes(p[24:28], "big") for p in out] == [
        (2**32 - 1000 + i * MSS) % 2**32 for i in range(4)
    ]
    assert all(tcp_checksum_ok(p) for p in out)
    assert all(int.from_bytes(p[2:4], "big") == len(p) for p in out)
    payload = b"".join(p[40:] for p in out)
    assert payload == bytes(i * 7 & 0xFF for i in range(3 * MSS + 10))


def test_segment_splits_a_v6_frame_with_ecn_gso_bit() -> None:
    first = v6(payload=b"", options=bytes.fromhex("0101080a0000000100000002"))
    frame = bytearray(gso_frame(first, 5000, 1000))
    frame[1] |= VIRTIO_NET_HDR_GSO_ECN
    out = segment(bytes(frame))
    assert len(out) == 5
    assert all(len(p) == 40 + 32 + 1000 for p in out)
    assert all(int.from_bytes(p[4:6], "big") == 1032 for p in out)
    assert all(tcp_checksum_ok(p) for p in out)
    assert all(p[60:72] == first.options for p in out)


def test_segment_with_exact_multiple_and_one_segment() -> None:
    out = segment(gso_frame(Seg(b""), 2 * MSS, MSS))
    assert [len(p) for p in out] == [40 + MSS] * 2
    out = segment(gso_frame(Seg(b"", flags=ACK | PSH), 500, MSS))
    assert len(out) == 1 and out[0][33] == ACK | PSH and tcp_checksum_ok(out[0])


def test_segment_drops_bad_frames() -> None:
    good4 = gso_frame(Seg(b""), 3000, MSS)
    good6 = gso_frame(v6(payload=b""), 3000, MSS)
    assert len(segment(good4)) == 3 and len(segment(good6)) == 3

    def patched(frame: bytes, **fields: int) -> bytes:
        names = ("flags", "gso_type", "hdr_len", "gso_size", "csum_start", "csum_offset")
        values = dict(zip(names, VNET.unpack_from(frame), strict=True))
        values.update(fields)
        return VNET.pack(*values.values()) + frame[VNET_HDR_LEN:]

    bad = [
        b"",
        ZERO_HDR[:9],
        patched(good4, gso_size=0),
        patched(good4, csum_offset=6),
        patched(good4, csum_start=24),
        patched(good4, gso_type=VIRTIO_NET_HDR_GSO_TCPV6),  # an IPv4 packet inside
        patched(good6, gso_type=VIRTIO_NET_HDR_GSO_TCPV4),
        patched(good6, csum_start=20),
        patched(good4, gso_type=VIRTIO_NET_HDR_GSO_UDP_L4),
        patched(good4, gso_type=VIRTIO_NET_HDR_GSO_UDP),
        patched(good4, gso_type=9),
        good4[: VNET_HDR_LEN + 35],  # TCP header cut short
        patched(ZERO_HDR + Seg(b"").build()[:30], flags=1, csum_start=20, csum_offset=16),
        patched(ZERO_HDR + b"\x45", flags=1, csum_start=0, csum_offset=0),
    ]
    doff_past_end = bytearray(gso_frame(Seg(b""), 0, MSS))
    doff_past_end[VNET_HDR_LEN + 32] = 0xF0
    bad.append(bytes(doff_past_end))
    doff_small = bytearray(good4)
    doff_small[VNET_HDR_LEN + 32] = 0x40
    bad.append(bytes(doff_small))
    for frame in bad:
        assert segment(frame) == [], frame[:12].hex()
