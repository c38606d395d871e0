"""The ToyVPN receive loop tells ``after_tun_write`` (the TUN reader's ``tun_written``) how
many packets a batch wrote to the TUN, after the write, and nothing of a handshake's batch."""

from __future__ import annotations

import trio
import trio.testing
from support.fakes import until
from support.toy_front import SECRET, toy_front
from support.wg_harness import ip4

CLIENT = ("198.51.100.2", 4000)


async def test_called_once_per_batch_written_to_the_tun(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[tuple[int, int]] = []  # (packets told, packets the TUN held) of each call
    front, sock, tun = toy_front(after_tun_write=lambda n: calls.append((n, len(tun.written))))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(front.receive_loop, nursery)
        sock.deliver(b"\x00" + SECRET, CLIENT)
        await until(lambda: CLIENT in front.protocol.sessions)
        await trio.testing.wait_all_tasks_blocked()
        assert calls == []
        address = str(front.protocol.sessions[CLIENT].address)
        for n in range(2):  # one batch of two
            sock.deliver(ip4(address, "192.0.2.80", bytes([n])), CLIENT)
        await until(lambda: len(tun.written) == 2)
        await trio.testing.wait_all_tasks_blocked()
        assert calls == [(2, 2)]
        nursery.cancel_scope.cancel()
