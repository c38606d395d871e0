"""The replay window: exact edges, and a property test against a plain model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trivpn.proto.wireguard.keypair import ReplayWindow
from trivpn.proto.wireguard.timers import REJECT_AFTER_MESSAGES

W = ReplayWindow.WINDOW


def test_window_is_at_least_2048_bits() -> None:
    assert W >= 2048


def test_first_counters_and_duplicates() -> None:
    window = ReplayWindow()
    assert window.check_and_set(0)
    assert not window.check_and_set(0)
    assert window.check_and_set(2)
    assert window.check_and_set(1)  # reordered
    assert not window.check_and_set(1)


def test_window_edges() -> None:
    window = ReplayWindow()
    top = W + 1000
    assert window.check_and_set(top)
    assert window.check_and_set(top - W)  # exactly the oldest still inside
    assert not window.check_and_set(top - W - 1)  # one too old
    assert not window.check_and_set(top - W)  # and no second time


def test_big_jump_clears_the_whole_ring() -> None:
    window = ReplayWindow()
    for c in range(200):
        assert window.check_and_set(c)
    far = 10 * W
    assert window.check_and_set(far)
    # Everything inside the new window is unseen, even where old bits used to be.
    assert window.check_and_set(far - 64 * 128 + 200)
    assert window.check_and_set(far - 1)


def test_reject_after_messages_limit() -> None:
    window = ReplayWindow()
    assert not window.check_and_set(REJECT_AFTER_MESSAGES)
    assert not window.check_and_set(2**64 - 1)
    assert window.check_and_set(REJECT_AFTER_MESSAGES - 1)
    assert window.check_and_set(REJECT_AFTER_MESSAGES - 2)


class Model:
    """Accept a counter once, if below the limit and at most W below the highest accepted."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.top = 0

    def check_and_set(self, counter: int, limit: int) -> bool:
        if counter >= limit or counter in self.seen or self.top - counter > W:
            return False
        self.seen.add(counter)
        self.top = max(self.top, counter)
        return True


# Steps: mostly small moves around the current top (reordering, duplicates, window edges),
# some large jumps, some absolute values.
_step = st.one_of(
    st.integers(-W - 70, 70).map(lambda d: ("rel", d)),
    st.integers(0, 40 * W).map(lambda d: ("jump", d)),
    st.integers(0, 3 * W).map(lambda d: ("abs", d)),
)


@given(st.lists(_step, max_size=300), st.sampled_from([REJECT_AFTER_MESSAGES, 5 * W]))
def test_window_agrees_with_model(steps: list[tuple[str, int]], limit: int) -> None:
    window, model = ReplayWindow(), Model()
    for kind, value in steps:
        if kind == "rel":
            counter = max(0, model.top + value)
        elif kind == "jump":
            counter = model.top + value
        else:
            counter = value
        assert window.check_and_set(counter, limit) == model.check_and_set(counter, limit), (
            kind,
            counter,
        )
