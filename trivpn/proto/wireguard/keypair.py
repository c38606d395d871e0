"""Transport keypairs: the two keys of one session, the send counter, the replay window."""

from __future__ import annotations

from typing import Final

from .crypto import TransportKey
from .timers import REJECT_AFTER_MESSAGES

_BLOCK_BITS: Final = 64
_BLOCK_SHIFT: Final = 6
_RING_BLOCKS: Final = 128  # 8192 bits, the Linux module's size
_RING_MASK: Final = _RING_BLOCKS - 1


class ReplayWindow:
    """Sliding-window counter check (RFC 6479 style ring of 64-bit blocks).

    Accepts each counter at most once, in any order, as long as it is no more than
    ``WINDOW`` below the highest counter accepted so far and below REJECT_AFTER_MESSAGES.
    Call it only after the packet authenticated, so forged counters cannot move it.
    """

    __slots__ = ("_blocks", "_top")

    WINDOW: Final = (_RING_BLOCKS - 1) * _BLOCK_BITS  # 8128

    def __init__(self) -> None:
        self._blocks = [0] * _RING_BLOCKS
        self._top = 0  # highest accepted counter; 0 also before anything is accepted

    def check_and_set(self, counter: int, limit: int = REJECT_AFTER_MESSAGES) -> bool:
        if counter >= limit:
            return False
        top = self._top
        block = counter >> _BLOCK_SHIFT
        blocks = self._blocks
        if counter > top:
            # Clear the blocks the window slides over (at most the whole ring).
            top_block = top >> _BLOCK_SHIFT
            for i in range(top_block + 1, top_block + 1 + min(block - top_block, _RING_BLOCKS)):
                blocks[i & _RING_MASK] = 0
            self._top = counter
        elif top - counter > self.WINDOW:
            return False
        bit = 1 << (counter & (_BLOCK_BITS - 1))
        slot = block & _RING_MASK
        if blocks[slot] & bit:
            return False
        blocks[slot] |= bit
        return True


class Keypair:
    """One session's keys, in the paper's terms T^send / T^recv, and their counters."""

    __slots__ = (
        "created",
        "is_initiator",
        "local_index",
        "receive_key",
        "remote_index",
        "replay",
        "send_counter",
        "send_key",
    )

    def __init__(
        self,
        send_key: bytes,
        receive_key: bytes,
        *,
        is_initiator: bool,
        local_index: int,
        remote_index: int,
        created: float,
    ) -> None:
        self.send_key = TransportKey(send_key)
        self.receive_key = TransportKey(receive_key)
        self.is_initiator = is_initiator
        self.local_index = local_index
        self.remote_index = remote_index
        self.created = created
        self.send_counter = 0
        self.replay = ReplayWindow()

    def next_send_counter(self) -> int | None:
        """Take the next nonce, or None once REJECT_AFTER_MESSAGES is reached."""
        n = self.send_counter
        if n >= REJECT_AFTER_MESSAGES:
            return None
        self.send_counter = n + 1
        return n

    def wipe(self) -> None:
        self.send_key.wipe()
        self.receive_key.wipe()

    def __repr__(self) -> str:
        role = "initiator" if self.is_initiator else "responder"
        return (
            f"Keypair({role}, local={self.local_index:#010x}, remote={self.remote_index:#010x}, "
            f"sent={self.send_counter})"
        )
