"""The unix-socket server under the control and UAPI sockets: what neither front's tests reach."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trivpn.control import unixsock


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Short: a unix socket path has at most 107 bytes, more than pytest's tmp_path may leave.
    base = Path(tempfile.mkdtemp(prefix="unixsock", dir="/tmp"))
    yield base / "run"
    shutil.rmtree(base)


async def echo_line(stream: trio.SocketStream, deadline: trio.CancelScope) -> None:
    await stream.send_all(await stream.receive_some(100))


async def serve(
    nursery: trio.Nursery, path: Path, handler: unixsock.Handler = echo_line, **options: Any
) -> None:
    settings: dict[str, Any] = {
        "name": "test",
        "ready": "ready",
        "unavailable": "off",
        "directory_rule": unixsock.DirectoryRule.PRIVATE,
        "max_connections": 4,
        "timeout": 3.0,
    }
    settings.update(options)
    await nursery.start(
        lambda task_status: unixsock.serve_unix(path, handler, task_status=task_status, **settings)
    )


async def ask(path: Path, data: bytes) -> bytes:
    """Send ``data``, then read until the server closes."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.connect(os.fspath(path))
    async with trio.SocketStream(sock) as stream:
        await stream.send_all(data)
        received = b""
        while chunk := await stream.receive_some(100):
            received += chunk
        return received


async def test_a_replaced_socket_is_not_removed_on_the_way_out(sock_dir: Path) -> None:
    path = sock_dir / "t0.sock"
    successor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        async with trio.open_nursery() as nursery:
            await serve(nursery, path)
            assert await ask(path, b"hi") == b"hi"
            path.unlink()
            successor.bind(os.fspath(path))  # another server took the name meanwhile
            nursery.cancel_scope.cancel()
        assert path.exists()
    finally:
        successor.close()


async def test_a_slow_client_is_closed_and_logged(
    sock_dir: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trivpn")
    path = sock_dir / "t1.sock"

    async def never_done(stream: trio.SocketStream, deadline: trio.CancelScope) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await serve(nursery, path, never_done, slow_client="took longer than %g s, so there")
        start = trio.current_time()
        assert await ask(path, b"") == b""
        assert trio.current_time() - start == pytest.approx(3)
        nursery.cancel_scope.cancel()
    assert "test: took longer than 3 s, so there" in caplog.messages


async def test_the_handler_may_move_its_deadline(
    sock_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = sock_dir / "t2.sock"

    async def twice_as_long(stream: trio.SocketStream, deadline: trio.CancelScope) -> None:
        deadline.deadline += 3
        await trio.sleep(5)
        await stream.send_all(b"late")

    async with trio.open_nursery() as nursery:
        await serve(nursery, path, twice_as_long)
        assert await ask(path, b"") == b"late"
        nursery.cancel_scope.cancel()


async def test_a_failing_handler_costs_only_its_connection(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = sock_dir / "t3.sock"

    async def fails_once(stream: trio.SocketStream, deadline: trio.CancelScope) -> None:
        if await stream.receive_some(100) == b"boom":
            raise RuntimeError("a bug")
        await stream.send_all(b"fine")

    async with trio.open_nursery() as nursery:
        await serve(nursery, path, fails_once)
        assert await ask(path, b"boom") == b""
        assert await ask(path, b"again") == b"fine"
        nursery.cancel_scope.cancel()
    assert "test: serving a connection failed" in caplog.messages


@pytest.mark.parametrize(
    ("rule", "refused"),
    [
        (unixsock.DirectoryRule.PRIVATE, "is open to others (mode 750)"),
        (unixsock.DirectoryRule.NOT_WRITABLE, None),
    ],
)
async def test_directory_rules(
    sock_dir: Path,
    caplog: pytest.LogCaptureFixture,
    rule: unixsock.DirectoryRule,
    refused: str | None,
) -> None:
    sock_dir.mkdir(mode=0o750)
    os.chmod(sock_dir, 0o750)
    async with trio.open_nursery() as nursery:
        await serve(nursery, sock_dir / "t4.sock", directory_rule=rule)
        assert (sock_dir / "t4.sock").exists() == (refused is None)
        nursery.cancel_scope.cancel()
    if refused is not None:
        assert f"test: {sock_dir} {refused}; off" in caplog.messages


@pytest.mark.root
def test_client_allowed_refuses_other_users() -> None:
    ours, _ = pair = socket.socketpair()
    with pair[0], pair[1]:
        assert unixsock.client_allowed(ours)
    carrier, child_end = socket.socketpair()
    with carrier, child_end:
        pid = os.fork()
        if pid == 0:  # the child: a socket made by nobody, passed back to us
            try:
                os.setgid(65534)
                os.setuid(65534)
                theirs, _peer = socket.socketpair()
                socket.send_fds(child_end, [b"x"], [theirs.fileno()])
            finally:
                os._exit(0)
        child_end.close()  # so that a child that failed leaves us an empty read, not a hang
        _, fds, _, _ = socket.recv_fds(carrier, 1, 1)
        os.waitpid(pid, 0)
    with socket.socket(fileno=fds[0]) as nobodys:
        assert not unixsock.client_allowed(nobodys)


async def test_running_out_of_descriptors_pauses_accepting_and_ends_nothing(
    sock_dir: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = sock_dir / "t5.sock"
    real_accept = trio.SocketListener.accept
    attempts: list[float] = []

    async def short_of_descriptors(self: trio.SocketListener) -> trio.SocketStream:
        attempts.append(trio.current_time())
        if len(attempts) <= 3:
            await trio.lowlevel.wait_readable(self.socket)  # a client waits, as for real
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return await real_accept(self)

    monkeypatch.setattr(trio.SocketListener, "accept", short_of_descriptors)
    async with trio.open_nursery() as nursery:
        await serve(nursery, path)
        assert await ask(path, b"hi") == b"hi"  # the client waited in the queue meanwhile
        nursery.cancel_scope.cancel()
    assert len(attempts) == 5  # 3 failed, the one that served, the one cancelled
    assert attempts[3] - attempts[0] == pytest.approx(0.3)
    refused = [m for m in caplog.messages if "cannot accept" in m]
    assert refused == [
        "test: cannot accept connections: EMFILE (Too many open files); retrying every 0.1 s"
    ]


async def test_a_thousand_refused_connections_make_a_few_lines_with_the_count(
    sock_dir: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = sock_dir / "t9.sock"

    async def held(stream: trio.SocketStream, deadline: trio.CancelScope) -> None:
        await stream.receive_some(1)  # until the client hangs up

    async def refused_one() -> None:
        await trio.sleep(1 / 32)  # exact in binary: 1,000 take 31.25 s, lines at 0, 10, 20, 30 s
        assert await ask(path, b"") == b""

    async with trio.open_nursery() as nursery:
        await serve(nursery, path, held, max_connections=1, backlog=8, timeout=1e6)
        occupant = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await occupant.connect(os.fspath(path))
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(1000):
            await refused_one()
        occupant.close()
        await trio.testing.wait_all_tasks_blocked()
        monkeypatch.setattr(unixsock, "client_allowed", lambda sock: False)
        for _ in range(1000):
            await refused_one()
        nursery.cancel_scope.cancel()
    full = "test: 1 connections at once; refusing one"
    stranger = "test: refused a client that is neither root nor our user"
    assert [m for m in caplog.messages if m.startswith("test: ") and "ready" not in m] == [
        full,
        *[f"{full} (319 similar suppressed)"] * 3,
        stranger,
        *[f"{stranger} (319 similar suppressed)"] * 3,
    ]
