"""Accepting through a shortage of descriptors: retried after a pause, logged once per interval."""

from __future__ import annotations

import errno
import os

import pytest
import trio
import trio.testing

from trivpn.control import accept


class FlakyListener(trio.abc.Listener[trio.abc.Stream]):
    """Fails each accept with the next of ``errnos``, then accepts (a memory stream)."""

    def __init__(self, errnos: list[int]) -> None:
        self.errnos = errnos
        self.attempts: list[float] = []  # when accept was called

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        self.attempts.append(trio.current_time())
        if self.errnos:
            number = self.errnos.pop(0)
            raise OSError(number, os.strerror(number))
        _client, server = trio.testing.memory_stream_pair()
        return server

    async def aclose(self) -> None:
        pass


def accept_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for m in caplog.messages if m.startswith("test: ")]


async def test_emfile_is_retried_after_a_pause_and_logged_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyListener([errno.EMFILE] * 3)
    listener = accept.RetryingListener(flaky, "test")
    start = trio.current_time()
    await listener.accept()
    assert [t - start for t in flaky.attempts] == pytest.approx([0, 0.1, 0.2, 0.3])
    assert accept_lines(caplog) == [
        "test: cannot accept connections: EMFILE (Too many open files); retrying every 0.1 s",
        "test: accepting again after 0.3 s (failed attempts: 3)",
    ]
    caplog.clear()
    await listener.accept()  # no failure since: nothing to say
    assert accept_lines(caplog) == []


async def test_one_line_per_interval_with_the_count_of_the_others(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # failures at 0, .3, .6, .9, 1.2, 1.5, 1.8, 2.1: logged at 0 and at 1.2 (3 suppressed)
    flaky = FlakyListener([errno.ENFILE] * 8)
    listener = accept.RetryingListener(flaky, "test", pause=0.3, log_interval=1.0)
    await listener.accept()
    refused = "test: cannot accept connections: ENFILE (Too many open files in system)"
    assert accept_lines(caplog) == [
        f"{refused}; retrying every 0.3 s",
        f"{refused}; retrying every 0.3 s (3 similar suppressed)",
        "test: accepting again after 2.4 s (failed attempts: 8)",
    ]


@pytest.mark.parametrize("number", [errno.ENOBUFS, errno.ENOMEM])
async def test_every_kind_of_exhaustion_is_retried(
    autojump_clock: trio.testing.MockClock, number: int
) -> None:
    flaky = FlakyListener([number])
    await accept.RetryingListener(flaky, "test").accept()
    assert len(flaky.attempts) == 2


@pytest.mark.parametrize("number", [errno.EBADF, errno.EINVAL])
async def test_other_errors_are_raised_at_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, number: int
) -> None:
    flaky = FlakyListener([number])
    start = trio.current_time()
    with pytest.raises(OSError) as raised:
        await accept.RetryingListener(flaky, "test").accept()
    assert raised.value.errno == number
    assert trio.current_time() == start and len(flaky.attempts) == 1
    assert accept_lines(caplog) == []


async def test_closing_closes_the_listener() -> None:
    closed: list[bool] = []

    class Listener(FlakyListener):
        async def aclose(self) -> None:
            closed.append(True)

    await accept.RetryingListener(Listener([]), "test").aclose()
    assert closed == [True]
